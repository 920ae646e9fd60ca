/** `process.env` as each kind of function sees it. */
import {
  actionGeneric as action,
  mutationGeneric as mutation,
  queryGeneric as query,
} from "convex/server";
import { v } from "convex/values";

const atLoad = process.env.GREETING ?? null;

export const inQuery = query({
  args: { name: v.string() },
  handler: (_ctx, { name }) => process.env[name] ?? null,
});

export const inMutation = mutation({
  args: { name: v.string() },
  handler: (_ctx, { name }) => process.env[name] ?? null,
});

export const inAction = action({
  args: { name: v.string() },
  handler: (_ctx, { name }) => process.env[name] ?? null,
});

export const atModuleLoad = query({ args: {}, handler: () => atLoad });
