/** A component nested in `notes`: one counter row. */
import { mutation, query } from "./_generated/server";

export const increment = mutation({
  args: {},
  handler: async (ctx) => {
    const row = await ctx.db.query("counts").first();
    if (row === null) await ctx.db.insert("counts", { n: 1 });
    else await ctx.db.patch("counts", row._id, { n: row.n + 1 });
  },
});

export const get = query({
  args: {},
  handler: async (ctx) => (await ctx.db.query("counts").first())?.n ?? 0,
});
