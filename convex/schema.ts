/**
 * Tables and the field validators that `args` and `returns` reuse.
 *
 * Identity is split in two: `users` is the public identity that messages
 * point at, `sessions` ties one browser's secret to a user. The secret itself
 * is never stored, only its SHA-256 (see `lib/sessions.ts`), and nothing
 * secret lives on `users`, so a user document is always safe to return.
 */
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export const userFields = {
  name: v.string(),
  isAnonymous: v.boolean(),
  /** Set by a later sign-in: `ctx.auth.getUserIdentity().tokenIdentifier`. */
  tokenIdentifier: v.optional(v.string()),
};

export const sessionFields = {
  /** Lowercase hex SHA-256 of the client's session id. */
  tokenHash: v.string(),
  userId: v.id("users"),
  /** Milliseconds since the epoch; refreshed at most hourly by mutations. */
  lastSeenAt: v.number(),
};

export const messageFields = {
  author: v.id("users"),
  body: v.string(),
};

export default defineSchema({
  users: defineTable(userFields).index("by_tokenIdentifier", [
    "tokenIdentifier",
  ]),
  sessions: defineTable(sessionFields)
    .index("by_tokenHash", ["tokenHash"])
    .index("by_userId", ["userId"]),
  messages: defineTable(messageFields).index("by_author", ["author"]),
});
