/**
 * Messages: `sendMessage` validates and stores a body; `listMessages` reads
 * one page newest first and resolves author names at read time, so a rename
 * shows on old messages too.
 *
 * The list is the same for every reader: it takes no caller and says nothing
 * about who asks (no `isMine`). Every open page then subscribes to the very
 * same query and arguments, so a backend runs it once per page per commit and
 * shares the result, instead of once per viewer. The page marks its own
 * messages by comparing `author._id` with `api.users.me`.
 */
import type { PaginationOptions, PaginationResult } from "convex/server";
import { ConvexError, v, type Infer } from "convex/values";
import type { Id } from "../_generated/dataModel";
import type { MutationCtx, QueryCtx } from "../_generated/server";
import { MESSAGE_MAX_CHARS, type ErrorData } from "../limits";
import { messageFields, userFields } from "../schema";
import { resolveAuthor } from "./accounts";
import { avatarUrl } from "./avatars";
import { isLongerThan } from "./text";

/** A message as the chat shows it to everyone. */
export const vListedMessage = v.object({
  _id: v.id("messages"),
  _creationTime: v.number(),
  body: messageFields.body,
  author: v.object({
    _id: v.id("users"),
    name: userFields.name,
    /** A member's picture; null for a guest, whom the page draws. */
    avatarUrl: v.union(v.string(), v.null()),
  }),
});

/**
 * Stores a message after trimming its body.
 *
 * @throws ConvexError MESSAGE_EMPTY or MESSAGE_TOO_LONG.
 */
export async function sendMessage(
  ctx: MutationCtx,
  author: Id<"users">,
  rawBody: string,
): Promise<Id<"messages">> {
  const body = rawBody.trim();
  if (body === "") {
    throw new ConvexError<ErrorData>({
      code: "MESSAGE_EMPTY",
      message: "A message cannot be empty.",
    });
  }
  if (isLongerThan(body, MESSAGE_MAX_CHARS)) {
    throw new ConvexError<ErrorData>({
      code: "MESSAGE_TOO_LONG",
      max: MESSAGE_MAX_CHARS,
      message: `A message can be at most ${MESSAGE_MAX_CHARS} characters long.`,
    });
  }
  return await ctx.db.insert("messages", { author, body });
}

/**
 * One page of messages, newest first. Each distinct author on the page is
 * read once (with their picture's URL), and all of them in parallel.
 */
export async function listMessages(
  ctx: QueryCtx,
  paginationOpts: PaginationOptions,
): Promise<PaginationResult<Infer<typeof vListedMessage>>> {
  const result = await ctx.db
    .query("messages")
    .order("desc")
    .paginate(paginationOpts);
  const authors = new Map<Id<"users">, Promise<Author>>();
  const authorOf = (id: Id<"users">) => {
    let author = authors.get(id);
    if (author === undefined) {
      author = readAuthor(ctx, id);
      authors.set(id, author);
    }
    return author;
  };
  const page = await Promise.all(
    result.page.map(async (message) => ({
      _id: message._id,
      _creationTime: message._creationTime,
      body: message.body,
      author: await authorOf(message.author),
    })),
  );
  return { ...result, page };
}

type Author = Infer<typeof vListedMessage>["author"];

/** A merged guest's messages show as the account's until they are moved. */
async function readAuthor(ctx: QueryCtx, id: Id<"users">): Promise<Author> {
  const user = await resolveAuthor(ctx, id);
  if (user === null) {
    throw new Error(
      `Message author ${id} does not exist; users must not be deleted while they have messages.`,
    );
  }
  return {
    _id: user._id,
    name: user.name,
    avatarUrl: await avatarUrl(ctx, user),
  };
}
