import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { v } from "convex/values";
import { mutationWithSession, queryWithSession } from "./lib/sessions";
import { listMessages, sendMessage, vListedMessage } from "./model/messages";
import { messageFields } from "./schema";

/** One page of the chat, newest first, for `usePaginatedQuery`. */
export const list = queryWithSession({
  args: { paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(vListedMessage),
  handler: (ctx, { paginationOpts }) =>
    listMessages(ctx, ctx.user?._id ?? null, paginationOpts),
});

/** Posts a message as the caller and returns its id. */
export const send = mutationWithSession({
  args: { body: messageFields.body },
  returns: v.id("messages"),
  handler: (ctx, { body }) => sendMessage(ctx, ctx.user._id, body),
});
