import { vSessionId } from "convex-helpers/server/sessions";
import { v } from "convex/values";
import { mutationWithSession } from "./lib/sessions";
import { claimPairingCode, createPairingCode } from "./model/pairing";
import { toProfile, vProfile } from "./model/users";

/**
 * A one-time code, valid for 10 minutes, that lets another device continue
 * as the caller; replaces the caller's previous code. See `model/pairing.ts`.
 */
export const create = mutationWithSession({
  args: {},
  returns: v.object({ code: v.string(), expiresAt: v.number() }),
  handler: (ctx) => createPairingCode(ctx, ctx.user._id),
});

/**
 * Spends a code on this device: `newSessionId`, a secret this device has just
 * made, becomes a session of the code's user, and the device's current session
 * ends. A wrong, used or expired code is `{ ok: false }`.
 */
export const claim = mutationWithSession({
  args: { code: v.string(), newSessionId: vSessionId },
  returns: v.union(
    v.object({ ok: v.literal(true), profile: vProfile }),
    v.object({ ok: v.literal(false) }),
  ),
  handler: async (ctx, { code, newSessionId }) => {
    const result = await claimPairingCode(ctx, ctx.session, code, newSessionId);
    if (!result.ok) return { ok: false as const };
    const user = await ctx.db.get("users", result.userId);
    return { ok: true as const, profile: toProfile(user!) };
  },
});
