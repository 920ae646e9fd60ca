/** The `notes` component: its own table, a nested component, a handle call. */
import {
  type AnyComponents,
  componentsGeneric,
  type FunctionHandle,
} from "convex/server";
import { v } from "convex/values";
import { internalQuery, mutation, query } from "./functions.ts";

const components: AnyComponents = componentsGeneric();

export const add = mutation({
  args: { text: v.string() },
  returns: v.id("notes"),
  handler: async (ctx, { text }) => {
    const label = process.env.NOTES_LABEL;
    const id = await ctx.db.insert("notes", {
      text: label === undefined ? text : `${label}: ${text}`,
    });
    await ctx.runMutation(components.tally.lib.increment, {});
    return id;
  },
});

export const list = query({
  args: {},
  handler: async (ctx) =>
    (await ctx.db.query("notes").collect()).map((n) => n.text),
});

export const tally = query({
  args: {},
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
