/**
 * Tables and the field validators that `args` and `returns` reuse.
 *
 * Identity is split in two: `users` is the public identity that messages
 * point at, `sessions` ties one browser's secret to a user. The secret itself
 * is never stored, only its SHA-256 (see `lib/sessions.ts`), and nothing
 * secret lives on `users`, so a user document is always safe to return.
 */
import { authTables } from "@convex-dev/auth/server";
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export const userFields = {
  name: v.string(),
  isAnonymous: v.boolean(),
  /** Set by a later sign-in: `ctx.auth.getUserIdentity().tokenIdentifier`. */
  tokenIdentifier: v.optional(v.string()),
  /** A member's sign-in e-mail (Convex Auth's `users.email`, index `email`). */
  email: v.optional(v.string()),
  /**
   * Set on a guest who signed in to an existing account: the account the
   * guest's messages belong to now. The row stays as a tombstone, so a
   * message not yet moved still resolves to the account's name.
   */
  mergedInto: v.optional(v.id("users")),
  /** A member's profile picture, checked by `avatars.setAvatar`. */
  avatar: v.optional(v.id("_storage")),
};

/**
 * A one-time ticket that lets the next sign-up turn the caller's guest into
 * the account (`model/accounts.ts`); only its SHA-256 is stored.
 */
export const upgradeTicketFields = {
  ticketHash: v.string(),
  userId: v.id("users"),
  expiresAt: v.number(),
};

export const sessionFields = {
  /** Lowercase hex SHA-256 of the client's session id. */
  tokenHash: v.string(),
  userId: v.id("users"),
  /**
   * Milliseconds since the epoch of the last mutation, rewritten at most once
   * per slice of the idle period (`model/expiry.ts`). A session unused for
   * the whole period has expired.
   */
  lastSeenAt: v.number(),
};

/**
 * A one-time code that attaches a second device to a user. Only the code's
 * SHA-256 is stored; the row is deleted when the code is used, replaced by a
 * newer code, or swept after `expiresAt`.
 */
export const pairingCodeFields = {
  codeHash: v.string(),
  userId: v.id("users"),
  expiresAt: v.number(),
};

/**
 * Wrong pairing codes counted in fixed windows, per claiming session
 * (`scope` "session:<sessions id>") and for the whole deployment ("global").
 */
export const pairingFailureFields = {
  scope: v.string(),
  windowStart: v.number(),
  count: v.number(),
};

export const messageFields = {
  author: v.id("users"),
  body: v.string(),
};

export default defineSchema({
  // Convex Auth's tables; `users` is ours, with the fields it reads.
  ...authTables,
  users: defineTable(userFields)
    .index("by_tokenIdentifier", ["tokenIdentifier"])
    .index("email", ["email"])
    .index("by_avatar", ["avatar"]),
  upgradeTickets: defineTable(upgradeTicketFields)
    .index("by_ticketHash", ["ticketHash"])
    .index("by_expiresAt", ["expiresAt"]),
  sessions: defineTable(sessionFields)
    .index("by_tokenHash", ["tokenHash"])
    .index("by_userId", ["userId"])
    .index("by_lastSeenAt", ["lastSeenAt"]),
  messages: defineTable(messageFields).index("by_author", ["author"]),
  pairingCodes: defineTable(pairingCodeFields)
    .index("by_codeHash", ["codeHash"])
    .index("by_userId", ["userId"])
    .index("by_expiresAt", ["expiresAt"]),
  pairingFailures: defineTable(pairingFailureFields)
    .index("by_scope", ["scope"])
    .index("by_windowStart", ["windowStart"]),
});
