/**
 * Accounts (Convex Auth, Password provider) and the guests they come from.
 *
 * - Sign-up from a guest upgrades in place: the page first asks for a
 *   one-time upgrade ticket (`createUpgradeTicket`, 5 minutes, stored
 *   hashed) and passes it with the sign-up form; Convex Auth then calls
 *   `createOrUpdateMember`, which turns the ticket's guest into the account
 *   (same `_id`, name kept, `isAnonymous: false`), so no message is touched.
 *   The guest's other sessions (paired devices) end: signing up on one
 *   device must not sign in the others.
 * - Sign-in to an existing account from a guest merges (`mergeGuest`): in
 *   one transaction the guest's first `MERGE_BATCH_SIZE` messages move to
 *   the account, the guest's sessions end and the guest row becomes a
 *   tombstone (`mergedInto`), so a message not moved yet still shows as the
 *   account's; the scheduler moves the rest in further batches. A guest
 *   with no message is simply deleted.
 *
 * ```ts
 * await mergeGuest(ctx, guestId, accountId);
 * ```
 */
import { getAuthSessionId } from "@convex-dev/auth/server";
import { ConvexError } from "convex/values";
import { internal } from "../_generated/api";
import type { Doc, Id } from "../_generated/dataModel";
import type { MutationCtx, QueryCtx } from "../_generated/server";
import type { ErrorData } from "../limits";
import { deleteSession } from "./sessions";

/** Messages re-pointed per transaction when a guest joins an account. */
export const MERGE_BATCH_SIZE = 200;

const UPGRADE_TICKET_TTL_MS = 5 * 60 * 1000;
const MAX_SESSIONS_ENDED = 100;
/**
 * Convex Auth keeps one refresh token per refresh of a session, and deletes
 * a session's tokens itself on sign-out; more than this many means the tab
 * refreshed every hour for months, and the rest expire on their own.
 */
const MAX_REFRESH_TOKENS_ENDED = 200;

/** A fresh ticket for `userId`'s next sign-up; returned once, stored hashed. */
export async function createUpgradeTicket(
  ctx: MutationCtx,
  userId: Id<"users">,
): Promise<string> {
  const ticket = toHex(crypto.getRandomValues(new Uint8Array(32)));
  await ctx.db.insert("upgradeTickets", {
    ticketHash: await sha256(ticket),
    userId,
    expiresAt: Date.now() + UPGRADE_TICKET_TTL_MS,
  });
  return ticket;
}

/**
 * Convex Auth's `createOrUpdateUser` callback: the user an account belongs
 * to. A sign-in keeps the account's user; a sign-up with a valid ticket
 * upgrades the ticket's guest; any other sign-up makes a new member.
 */
export async function createOrUpdateMember(
  ctx: MutationCtx,
  {
    existingUserId,
    profile,
  }: {
    existingUserId: Id<"users"> | null;
    profile: { email?: string; upgradeTicket?: unknown };
  },
): Promise<Id<"users">> {
  if (existingUserId !== null) return existingUserId;
  const email = profile.email;
  const guest =
    typeof profile.upgradeTicket === "string"
      ? await spendTicket(ctx, profile.upgradeTicket)
      : null;
  if (guest !== null) {
    await ctx.db.patch("users", guest._id, { isAnonymous: false, email });
    await endSessions(ctx, guest._id);
    return guest._id;
  }
  return await ctx.db.insert("users", {
    name: email?.split("@")[0]?.slice(0, 40) || "Member",
    isAnonymous: false,
    email,
  });
}

/**
 * Moves `guestId`'s identity into `accountId` (see the module header).
 *
 * @throws ConvexError MERGE_NOT_A_GUEST when `guestId` is not a live guest.
 */
export async function mergeGuest(
  ctx: MutationCtx,
  guestId: Id<"users">,
  accountId: Id<"users">,
): Promise<void> {
  if (guestId === accountId) return;
  const guest = await ctx.db.get("users", guestId);
  if (guest === null || !guest.isAnonymous || guest.mergedInto !== undefined) {
    throw new ConvexError<ErrorData>({
      code: "MERGE_NOT_A_GUEST",
      message: "Only a guest who has not joined an account can be merged.",
    });
  }
  await endSessions(ctx, guestId);
  const more = await moveMessages(ctx, guestId, accountId);
  const left = await ctx.db
    .query("messages")
    .withIndex("by_author", (q) => q.eq("author", guestId))
    .first();
  if (left === null) {
    await ctx.db.delete("users", guestId);
    return;
  }
  await ctx.db.patch("users", guestId, { mergedInto: accountId });
  if (more) {
    await ctx.scheduler.runAfter(0, internal.accounts.continueMerge, {
      from: guestId,
      to: accountId,
    });
  }
}

/**
 * Re-points one batch of `from`'s messages to `to`.
 *
 * @returns Whether a full batch was moved, so more may remain.
 */
export async function moveMessages(
  ctx: MutationCtx,
  from: Id<"users">,
  to: Id<"users">,
): Promise<boolean> {
  const batch = await ctx.db
    .query("messages")
    .withIndex("by_author", (q) => q.eq("author", from))
    .take(MERGE_BATCH_SIZE);
  for (const message of batch) {
    await ctx.db.patch("messages", message._id, { author: to });
  }
  return batch.length === MERGE_BATCH_SIZE;
}

/**
 * The user a message author resolves to: the account a merged guest joined,
 * else the author. Accounts are never merged, so one step is enough.
 */
export async function resolveAuthor(
  ctx: QueryCtx,
  id: Id<"users">,
): Promise<Doc<"users"> | null> {
  const user = await ctx.db.get("users", id);
  if (user?.mergedInto === undefined) return user;
  return await ctx.db.get("users", user.mergedInto);
}

/**
 * Ends this device's Convex Auth session and its refresh tokens, as
 * Convex Auth's `signOut` does (`@convex-dev/auth` 0.0.95
 * `implementation/sessions.ts` `deleteSession`), so the device's token is
 * refused from this transaction on (`lib/sessions.ts` checks the session)
 * even if the browser never gets to call `signOut`.
 */
export async function endAuthSession(ctx: MutationCtx): Promise<void> {
  const raw = await getAuthSessionId(ctx);
  const id = raw === null ? null : ctx.db.normalizeId("authSessions", raw);
  if (id === null) return;
  const tokens = await ctx.db
    .query("authRefreshTokens")
    .withIndex("sessionId", (q) => q.eq("sessionId", id))
    .take(MAX_REFRESH_TOKENS_ENDED);
  for (const token of tokens)
    await ctx.db.delete("authRefreshTokens", token._id);
  if ((await ctx.db.get("authSessions", id)) !== null) {
    await ctx.db.delete("authSessions", id);
  }
}

async function spendTicket(
  ctx: MutationCtx,
  ticket: string,
): Promise<Doc<"users"> | null> {
  const ticketHash = await sha256(ticket);
  const stored = await ctx.db
    .query("upgradeTickets")
    .withIndex("by_ticketHash", (q) => q.eq("ticketHash", ticketHash))
    .unique();
  if (stored === null) return null;
  await ctx.db.delete("upgradeTickets", stored._id);
  if (stored.expiresAt <= Date.now()) return null;
  const guest = await ctx.db.get("users", stored.userId);
  return guest !== null && guest.isAnonymous && guest.mergedInto === undefined
    ? guest
    : null;
}

async function endSessions(
  ctx: MutationCtx,
  userId: Id<"users">,
): Promise<void> {
  const sessions = await ctx.db
    .query("sessions")
    .withIndex("by_userId", (q) => q.eq("userId", userId))
    .take(MAX_SESSIONS_ENDED);
  for (const session of sessions) await deleteSession(ctx, session);
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return toHex(new Uint8Array(digest));
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join(
    "",
  );
}
