/**
 * Removing identities: a session with what hangs off it, a user once nothing
 * is left of them, and "delete everything I did here". Nothing here ever
 * deletes a user who still has messages, so every message keeps an author.
 *
 * ```ts
 * await deleteSession(ctx, session);
 * await deleteGuestIfUnused(ctx, session.userId);
 * ```
 */
import type { Doc, Id } from "../_generated/dataModel";
import type { MutationCtx } from "../_generated/server";
import { DELETE_BATCH_SIZE } from "../limits";

/** A user has at most one pairing code (`createPairingCode` replaces it). */
const MAX_CODES_PER_USER = 16;

/** The `pairingFailures.scope` that counts one session's wrong codes. */
export function pairingFailureScope(sessionId: Id<"sessions">): string {
  return `session:${sessionId}`;
}

/** Deletes a session and its count of wrong pairing codes. */
export async function deleteSession(
  ctx: MutationCtx,
  session: Doc<"sessions">,
): Promise<void> {
  const scope = pairingFailureScope(session._id);
  const failures = await ctx.db
    .query("pairingFailures")
    .withIndex("by_scope", (q) => q.eq("scope", scope))
    .unique();
  if (failures !== null) await ctx.db.delete("pairingFailures", failures._id);
  await ctx.db.delete("sessions", session._id);
}

/**
 * Deletes a guest who has no session and no message left, with their pairing
 * codes. Anyone else is kept: a guest's messages keep their author's name,
 * and a member (`isAnonymous: false`) can always sign in again.
 *
 * @returns Whether the user was deleted.
 */
export async function deleteGuestIfUnused(
  ctx: MutationCtx,
  userId: Id<"users">,
): Promise<boolean> {
  const user = await ctx.db.get("users", userId);
  if (user === null || !user.isAnonymous) return false;
  const session = await ctx.db
    .query("sessions")
    .withIndex("by_userId", (q) => q.eq("userId", userId))
    .first();
  const message = await ctx.db
    .query("messages")
    .withIndex("by_author", (q) => q.eq("author", userId))
    .first();
  if (session !== null || message !== null) return false;
  await deletePairingCodes(ctx, userId);
  await ctx.db.delete("users", userId);
  return true;
}

export async function deletePairingCodes(
  ctx: MutationCtx,
  userId: Id<"users">,
): Promise<void> {
  const codes = await ctx.db
    .query("pairingCodes")
    .withIndex("by_userId", (q) => q.eq("userId", userId))
    .take(MAX_CODES_PER_USER);
  for (const code of codes) await ctx.db.delete("pairingCodes", code._id);
}

/**
 * One step of "delete everything I did here" for the caller's user: up to
 * `DELETE_BATCH_SIZE` messages, then the user's other sessions, and last the
 * caller's session, pairing codes and user, in that order, so a step that
 * stops early leaves a user who can still call again. Each step is one
 * transaction of bounded size; the caller repeats until `done`.
 */
export async function deleteEverythingStep(
  ctx: MutationCtx,
  session: Doc<"sessions">,
): Promise<{ done: boolean }> {
  const { userId } = session;
  const messages = await ctx.db
    .query("messages")
    .withIndex("by_author", (q) => q.eq("author", userId))
    .take(DELETE_BATCH_SIZE);
  for (const message of messages) {
    await ctx.db.delete("messages", message._id);
  }
  if (messages.length === DELETE_BATCH_SIZE) return { done: false };

  const userSessions = () =>
    ctx.db
      .query("sessions")
      .withIndex("by_userId", (q) => q.eq("userId", userId))
      .take(DELETE_BATCH_SIZE);
  for (const other of await userSessions()) {
    if (other._id !== session._id) await deleteSession(ctx, other);
  }
  // This transaction's deletes are already invisible here.
  if ((await userSessions()).some(({ _id }) => _id !== session._id)) {
    return { done: false };
  }

  await deleteSession(ctx, session);
  await deletePairingCodes(ctx, userId);
  await ctx.db.delete("users", userId);
  return { done: true };
}
