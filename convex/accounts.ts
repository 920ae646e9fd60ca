import { vSessionId, type SessionId } from "convex-helpers/server/sessions";
import { ConvexError, v } from "convex/values";
import type { Doc } from "./_generated/dataModel";
import { internalMutation, type MutationCtx } from "./_generated/server";
import { internal } from "./_generated/api";
import type { ErrorData } from "./limits";
import { addSession, getAccount, mutationWithSession } from "./lib/sessions";
import {
  createUpgradeTicket,
  endAuthSession,
  mergeGuest,
  moveMessages,
} from "./model/accounts";
import { deleteSession } from "./model/sessions";
import { createAnonymousUser, toProfile, vProfile } from "./model/users";

/**
 * A one-time ticket to pass as `upgradeTicket` with the sign-up form, so the
 * new account keeps this guest's user id, name and messages.
 */
export const prepareUpgrade = mutationWithSession({
  args: {},
  returns: v.object({ ticket: v.string() }),
  handler: async (ctx) => ({
    ticket: await createUpgradeTicket(ctx, ctx.user._id),
  }),
});

/**
 * Called by the page right after a sign-in or sign-up: joins this device's
 * guest to the account if it is another user (messages move, the guest
 * becomes a tombstone) and rotates the device's secret: `newSessionId` is
 * the device's session from now on, the old one stops working.
 *
 * @throws ConvexError NOT_SIGNED_IN without a Convex Auth token, or with
 *   one whose Convex Auth session has ended.
 */
export const afterSignIn = mutationWithSession({
  args: { newSessionId: vSessionId },
  returns: vProfile,
  handler: async (ctx, { newSessionId }) => {
    // A token whose Convex Auth session has ended (signed out) is no one.
    const account = await getAccount(ctx);
    if (account === null) {
      throw new ConvexError<ErrorData>({
        code: "NOT_SIGNED_IN",
        message: "Sign in first.",
      });
    }
    const accountId = account._id;
    if (ctx.session.userId !== accountId) {
      await mergeGuest(ctx, ctx.session.userId, accountId);
    }
    if ((await ctx.db.get("sessions", ctx.session._id)) !== null) {
      await deleteSession(ctx, ctx.session);
    }
    await addSession(ctx, newSessionId, accountId);
    return toProfile(ctx.user);
  },
});

/**
 * "Sign out", called by the page before Convex Auth's `signOut`: this
 * device's session ends (its secret stops working at once) and
 * `newSessionId` becomes a fresh guest; the account and its other devices
 * are untouched.
 */
export const signOutDevice = mutationWithSession({
  args: { newSessionId: vSessionId },
  returns: vProfile,
  handler: (ctx, { newSessionId }) =>
    startOverAsGuest(ctx, ctx.session, newSessionId),
});

/**
 * "Sign out and forget this device": as `signOutDevice`, and the server also
 * drops what it keeps for this device's sign-in, Convex Auth's session with
 * its refresh tokens, in the same transaction; the page then clears what the
 * browser remembers (`src/lib/rememberedEmail.ts`). The account and its
 * other devices are untouched.
 */
export const forgetDevice = mutationWithSession({
  args: { newSessionId: vSessionId },
  returns: vProfile,
  handler: async (ctx, { newSessionId }) => {
    await endAuthSession(ctx);
    return await startOverAsGuest(ctx, ctx.session, newSessionId);
  },
});

async function startOverAsGuest(
  ctx: MutationCtx,
  session: Doc<"sessions">,
  newSessionId: SessionId,
) {
  await deleteSession(ctx, session);
  const guestId = await createAnonymousUser(ctx);
  await addSession(ctx, newSessionId, guestId);
  return toProfile((await ctx.db.get("users", guestId))!);
}

/** Scheduled by a merge with more than one batch of messages. */
export const continueMerge = internalMutation({
  args: { from: v.id("users"), to: v.id("users") },
  returns: v.null(),
  handler: async (ctx, { from, to }) => {
    if (await moveMessages(ctx, from, to)) {
      await ctx.scheduler.runAfter(0, internal.accounts.continueMerge, {
        from,
        to,
      });
    }
    return null;
  },
});
