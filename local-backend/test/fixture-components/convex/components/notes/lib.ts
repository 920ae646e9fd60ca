/** The `notes` component: its own table, a nested component, a handle call. */
import { componentsGeneric, type FunctionHandle } from "convex/server";
import { v } from "convex/values";
import type { ComponentApi } from "../tally/_generated/component";
import { env, internalQuery, mutation, query } from "./_generated/server";

// Not `components` from ./_generated/api: convex 1.48 writes that type import
// relative to the app's folder, which breaks for a nested local component.
const components = componentsGeneric() as unknown as {
  tally: ComponentApi<"tally">;
};

export const add = mutation({
  args: { text: v.string() },
  returns: v.id("notes"),
  handler: async (ctx, { text }) => {
    const label = env.NOTES_LABEL;
    const id = await ctx.db.insert("notes", {
      text: label === undefined ? text : `${label}: ${text}`,
    });
    await ctx.runMutation(components.tally.lib.increment, {});
    return id;
  },
});

export const list = query({
  args: {},
  returns: v.array(v.string()),
  handler: async (ctx) =>
    (await ctx.db.query("notes").collect()).map((n) => n.text),
});

export const tally = query({
  args: {},
  returns: v.number(),
  handler: (ctx) => ctx.runQuery(components.tally.lib.get, {}),
});

/** Whether an ID (any string) names one of this component's notes. */
export const get = query({
  args: { id: v.string() },
  handler: async (ctx, { id }) => {
    const normalized = ctx.db.normalizeId("notes", id);
    return {
      normalized,
      doc: normalized === null ? null : await ctx.db.get("notes", normalized),
    };
  },
});

export const callBack = mutation({
  args: { handle: v.string(), text: v.string() },
  handler: async (ctx, { handle, text }) => {
    await ctx.runMutation(handle as FunctionHandle<"mutation">, { text });
  },
});

export const secret = internalQuery({
  args: {},
  handler: () => "secret",
});

export const whereAmI = query({
  args: {},
  handler: () => "notes",
});
