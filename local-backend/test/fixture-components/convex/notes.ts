/**
 * The app side of the local `notes` component: same table name on both sides,
 * calls into the component, and a function handle it calls back.
 */
import { createFunctionHandle } from "convex/server";
import { v } from "convex/values";
import { components, internal } from "./_generated/api";
import { internalMutation, mutation, query } from "./_generated/server";

export const addLocal = mutation({
  args: { text: v.string() },
  handler: (ctx, { text }) => ctx.db.insert("notes", { text }),
});

export const addToComponent = mutation({
  args: { text: v.string(), archive: v.optional(v.boolean()) },
  handler: (ctx, { text, archive }) =>
    ctx.runMutation(
      archive === true ? components.archive.lib.add : components.notes.lib.add,
      { text },
    ),
});

export const listBoth = query({
  args: {},
  handler: async (ctx) => ({
    app: (await ctx.db.query("notes").collect()).map((n) => n.text),
    notes: await ctx.runQuery(components.notes.lib.list, {}),
    archive: await ctx.runQuery(components.archive.lib.list, {}),
    tally: await ctx.runQuery(components.notes.lib.tally, {}),
  }),
});

/** Asks the component whether it can see an app document. */
export const componentSees = query({
  args: { id: v.id("notes") },
  handler: (ctx, { id }) => ctx.runQuery(components.notes.lib.get, { id }),
});

export const record = internalMutation({
  args: { text: v.string() },
  handler: (ctx, { text }) => ctx.db.insert("notes", { text }),
});

/** Hands the component a handle to `record`; the component calls it back. */
export const addThroughHandle = mutation({
  args: { text: v.string() },
  handler: async (ctx, { text }): Promise<string> => {
    const handle: string = await createFunctionHandle(internal.notes.record);
    await ctx.runMutation(components.notes.lib.callBack, { handle, text });
    return handle;
  },
});

/** A component's internal function, which it does not export. */
export const callInternal = query({
  args: {},
  handler: (ctx) =>
    ctx.runQuery(
      (components.notes.lib as unknown as Record<string, never>).secret,
      {},
    ),
});

export const callMissingChild = query({
  args: {},
  handler: (ctx) =>
    ctx.runQuery(
      (components as unknown as Record<string, typeof components.notes>).nowhere
        .lib.list,
      {},
    ),
});
