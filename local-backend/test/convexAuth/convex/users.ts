/** The signed-in user, as an app reads it. */
import { getAuthUserId } from "@convex-dev/auth/server";
import { queryGeneric as query } from "convex/server";

export const viewer = query({
  args: {},
  handler: async (ctx) => {
    const userId = await getAuthUserId(ctx);
    if (userId === null) return null;
    const user = (await ctx.db.get("users", userId)) as {
      email?: string;
    } | null;
    return { userId, email: user?.email ?? null };
  },
});
