/** The isolate side: what the Node actions call into. */
import { v } from "convex/values";
import { internalMutation, query } from "./lib/functions";

export const add = internalMutation({
  args: { body: v.string(), digest: v.string() },
  handler: (ctx, args) => ctx.db.insert("notes", args),
});

export const list = query({
  args: {},
  handler: async (ctx) =>
    (await ctx.db.query("notes").take(100)).map(({ body, digest }) => ({
      body,
      digest,
    })),
});

export const whoami = query({
  args: {},
  handler: async (ctx) => (await ctx.auth.getUserIdentity())?.subject ?? null,
});
