/**
 * The clean-up job's one step, in bounded batches: expired sessions (and
 * the guests they leave with nothing: no other session, no message), expired
 * pairing codes and upgrade tickets, and pairing failure counters whose
 * window has closed.
 * A guest with messages keeps them under their last name: nothing here
 * deletes a message.
 *
 * ```ts
 * const { more } = await sweepExpired(ctx, Date.now());
 * ```
 */
import type { Id } from "../_generated/dataModel";
import type { MutationCtx } from "../_generated/server";
import { CLEANUP_BATCH_SIZE } from "../limits";
import { expiredBefore } from "./expiry";
import { PAIRING_COUNTER_MAX_AGE_MS } from "./pairing";
import { deleteGuestIfUnused, deleteSession } from "./sessions";

export type SweepResult = {
  sessions: number;
  users: number;
  pairingCodes: number;
  pairingFailures: number;
  /** A batch was full, so there may be more to delete. */
  more: boolean;
};

export async function sweepExpired(
  ctx: MutationCtx,
  now: number,
): Promise<SweepResult> {
  const sessions = await ctx.db
    .query("sessions")
    .withIndex("by_lastSeenAt", (q) => q.lte("lastSeenAt", expiredBefore(now)))
    .take(CLEANUP_BATCH_SIZE);
  const owners = new Set<Id<"users">>();
  for (const session of sessions) {
    await deleteSession(ctx, session);
    owners.add(session.userId);
  }
  let users = 0;
  for (const userId of owners) {
    if (await deleteGuestIfUnused(ctx, userId)) users++;
  }

  const codes = await ctx.db
    .query("pairingCodes")
    .withIndex("by_expiresAt", (q) => q.lte("expiresAt", now))
    .take(CLEANUP_BATCH_SIZE);
  for (const code of codes) await ctx.db.delete("pairingCodes", code._id);

  const tickets = await ctx.db
    .query("upgradeTickets")
    .withIndex("by_expiresAt", (q) => q.lte("expiresAt", now))
    .take(CLEANUP_BATCH_SIZE);
  for (const ticket of tickets) {
    await ctx.db.delete("upgradeTickets", ticket._id);
  }

  const counters = await ctx.db
    .query("pairingFailures")
    .withIndex("by_windowStart", (q) =>
      q.lte("windowStart", now - PAIRING_COUNTER_MAX_AGE_MS),
    )
    .take(CLEANUP_BATCH_SIZE);
  for (const counter of counters) {
    await ctx.db.delete("pairingFailures", counter._id);
  }

  return {
    sessions: sessions.length,
    users,
    pairingCodes: codes.length,
    pairingFailures: counters.length,
    more: [sessions, codes, tickets, counters].some(
      (batch) => batch.length === CLEANUP_BATCH_SIZE,
    ),
  };
}
