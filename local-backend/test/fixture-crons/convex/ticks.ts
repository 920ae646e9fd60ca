/** What the cron jobs run, and how a test counts their runs. */
import {
  internalActionGeneric,
  internalMutationGeneric,
  makeFunctionReference,
  queryGeneric,
} from "convex/server";
import { v } from "convex/values";

const tickRef = makeFunctionReference<"mutation", { job: string }, null>(
  "ticks:tick",
);

export const tick = internalMutationGeneric({
  args: { job: v.string() },
  handler: async (ctx, { job }) => {
    await ctx.db.insert("ticks", { job });
    return null;
  },
});

export const tickFromAction = internalActionGeneric({
  args: { job: v.string() },
  handler: async (ctx, { job }) => {
    await ctx.runMutation(tickRef, { job });
    return null;
  },
});

export const count = queryGeneric({
  args: { job: v.string() },
  handler: async (ctx, { job }) =>
    (
      await ctx.db
        .query("ticks")
        .withIndex("by_job", (q) => q.eq("job", job))
        .collect()
    ).length,
});
