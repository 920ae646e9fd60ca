/** The isolate side: what the Node actions call into. */
import { makeFunctionReference } from "convex/server";
import { v } from "convex/values";
import { action, internalMutation, query } from "./lib/functions";

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

/** Isolate twins of the Node actions, for bench/nodeActions.ts. */
export const ping = action({ args: {}, handler: () => null });

export const write = action({
  args: { body: v.string() },
  handler: async (ctx, { body }): Promise<string> =>
    await ctx.runMutation(addRef, { body, digest: "isolate" }),
});

const addRef = makeFunctionReference<
  "mutation",
  { body: string; digest: string },
  string
>("notes:add");
