import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { v } from "convex/values";
import { query } from "./_generated/server";
import { mutationWithSession } from "./lib/sessions";
import { listMessages, sendMessage, vListedMessage } from "./model/messages";
import { enforceLimit } from "./model/rateLimits";
import { messageFields } from "./schema";

/**
 * One page of the chat, newest first, for `usePaginatedQuery`. Public and
 * the same for every caller (no session): see `model/messages.ts`.
 */
export const list = query({
  args: { paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(vListedMessage),
  handler: (ctx, { paginationOpts }) => listMessages(ctx, paginationOpts),
});

/**
 * Posts a message as the caller and returns its id; at most a burst of 5,
 * then one every 3 s (`RATE_LIMITED` with `retryAfter` beyond that).
 */
export const send = mutationWithSession({
  args: { body: messageFields.body },
  returns: v.id("messages"),
  handler: async (ctx, { body }) => {
    await enforceLimit(ctx, "send", ctx.user._id);
    return await sendMessage(ctx, ctx.user._id, body);
  },
});
