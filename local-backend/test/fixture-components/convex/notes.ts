/**
 * The app side of the local `notes` component: same table name on both sides,
 * calls into the component, and a function handle it calls back.
 */
import { createFunctionHandle, makeFunctionReference } from "convex/server";
import { v } from "convex/values";
import { components, internalMutation, mutation, query } from "./lib.ts";

export const addLocal = mutation({
  args: { text: v.string() },
  handler: (ctx, { text }) => ctx.db.insert("notes", { text }),
});

export const addToComponent = mutation({
  args: { text: v.string(), instance: v.optional(v.string()) },
  handler: async (ctx, { text, instance }): Promise<string> =>
    (await ctx.runMutation(components[instance ?? "notes"].lib.add, {
      text,
    })) as string,
});

export const listBoth = query({
  args: {},
  handler: async (ctx) => ({
    app: (await ctx.db.query("notes").collect()).map((n) => n.text),
    notes: (await ctx.runQuery(components.notes.lib.list, {})) as string[],
    archive: (await ctx.runQuery(components.archive.lib.list, {})) as string[],
    tally: (await ctx.runQuery(components.notes.lib.tally, {})) as number,
  }),
});

/** Asks the component whether it can see an app document. */
export const componentSees = query({
  args: { id: v.id("notes") },
  handler: async (ctx, { id }) =>
    (await ctx.runQuery(components.notes.lib.get, { id })) as unknown,
});

export const record = internalMutation({
  args: { text: v.string() },
  handler: (ctx, { text }) => ctx.db.insert("notes", { text }),
});

/** Hands the component a handle to `record`; the component calls it back. */
export const addThroughHandle = mutation({
  args: { text: v.string() },
  handler: async (ctx, { text }) => {
    const handle = await createFunctionHandle(
      makeFunctionReference<"mutation">("notes:record"),
    );
    await ctx.runMutation(components.notes.lib.callBack, { handle, text });
    return handle;
  },
});

/** A reference to a component function that is not exported (internal). */
export const callInternal = query({
  args: {},
  handler: (ctx) => ctx.runQuery(components.notes.lib.secret, {}),
});

export const callMissingChild = query({
  args: {},
  handler: (ctx) => ctx.runQuery(components.nowhere.lib.list, {}),
});
