import { v } from "convex/values";
import { mutationWithSession, queryWithSession } from "./lib/sessions";
import { setUserName, toProfile, vProfile } from "./model/users";
import { userFields } from "./schema";

/** The caller's profile, or null before the session's first mutation. */
export const me = queryWithSession({
  args: {},
  returns: v.union(vProfile, v.null()),
  handler: (ctx) => (ctx.user === null ? null : toProfile(ctx.user)),
});

/** Renames the caller; old messages show the new name too. */
export const setName = mutationWithSession({
  args: { name: userFields.name },
  returns: v.null(),
  handler: async (ctx, { name }) => {
    await setUserName(ctx, ctx.user._id, name);
    return null;
  },
});
