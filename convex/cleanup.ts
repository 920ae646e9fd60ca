import { v } from "convex/values";
import { internal } from "./_generated/api";
import { internalMutation } from "./_generated/server";
import { sweepExpired } from "./model/cleanup";

/**
 * Run by `crons.ts`: one bounded batch of clean-up (`model/cleanup.ts`).
 * While batches come back full it schedules itself again at once, so a
 * backlog drains in a chain of small transactions rather than one big one.
 */
export const sweep = internalMutation({
  args: {},
  returns: v.object({
    sessions: v.number(),
    users: v.number(),
    pairingCodes: v.number(),
    pairingFailures: v.number(),
    more: v.boolean(),
  }),
  handler: async (ctx) => {
    const result = await sweepExpired(ctx, Date.now());
    if (result.more) {
      await ctx.scheduler.runAfter(0, internal.cleanup.sweep, {});
    }
    return result;
  },
});
