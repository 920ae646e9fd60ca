/** Vector search from actions over `embeddings`. */
import { action, mutation } from "./lib/functions";
import { v } from "convex/values";
import { embeddingFields } from "./schema";

export const insertMany = mutation({
  args: { docs: v.array(v.object(embeddingFields)) },
  handler: async (ctx, { docs }) => {
    const ids = [];
    for (const doc of docs) ids.push(await ctx.db.insert("embeddings", doc));
    return ids;
  },
});

export const search = action({
  args: {
    vector: v.array(v.float64()),
    limit: v.optional(v.number()),
    kinds: v.optional(v.array(v.string())),
    n: v.optional(v.number()),
    index: v.optional(v.string()),
  },
  handler: (ctx, { vector, limit, kinds, n, index }) =>
    ctx.vectorSearch("embeddings", (index ?? "by_vector") as "by_vector", {
      vector,
      ...(limit !== undefined ? { limit } : {}),
      ...(kinds !== undefined || n !== undefined
        ? {
            filter: (q) =>
              q.or(
                ...(kinds ?? []).map((kind) => q.eq("kind", kind)),
                ...(n !== undefined ? [q.eq("n", n)] : []),
              ),
          }
        : {}),
    }),
});
