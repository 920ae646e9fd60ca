/** Who the caller is, from every kind of function. */
import {
  actionGeneric as action,
  anyApi,
  internalQueryGeneric as internalQuery,
  mutationGeneric as mutation,
  queryGeneric as query,
} from "convex/server";

const internal = anyApi;

export const me = query({
  args: {},
  handler: (ctx) => ctx.auth.getUserIdentity(),
});

export const meInMutation = mutation({
  args: {},
  handler: async (ctx) => {
    const identity = await ctx.auth.getUserIdentity();
    await ctx.db.insert("calls", { subject: identity?.subject ?? null });
    return identity;
  },
});

export const meInAction = action({
  args: {},
  handler: async (ctx) => ({
    direct: await ctx.auth.getUserIdentity(),
    nested: (await ctx.runQuery(internal.identity.internalMe, {})) as unknown,
  }),
});

export const internalMe = internalQuery({
  args: {},
  handler: (ctx) => ctx.auth.getUserIdentity(),
});
