import { v } from "convex/values";
import { mutationWithSession, queryWithSession } from "./lib/sessions";
import { avatarUrl } from "./model/avatars";
import { enforceLimit } from "./model/rateLimits";
import { deleteEverythingStep } from "./model/sessions";
import { setUserName, toProfile, vProfile } from "./model/users";
import { userFields } from "./schema";

/**
 * The caller's profile with their picture's URL (null for a guest), or null
 * before the session's first mutation.
 */
export const me = queryWithSession({
  args: {},
  returns: v.union(
    v.object({
      ...vProfile.fields,
      avatarUrl: v.union(v.string(), v.null()),
    }),
    v.null(),
  ),
  handler: async (ctx) =>
    ctx.user === null
      ? null
      : { ...toProfile(ctx.user), avatarUrl: await avatarUrl(ctx, ctx.user) },
});

/**
 * Renames the caller; old messages show the new name too. Limited per user
 * (`RATE_LIMITED` with `retryAfter`).
 */
export const setName = mutationWithSession({
  args: { name: userFields.name },
  returns: v.null(),
  handler: async (ctx, { name }) => {
    await enforceLimit(ctx, "rename", ctx.user._id);
    await setUserName(ctx, ctx.user._id, name);
    return null;
  },
});

/**
 * "Delete everything I did here", one bounded step at a time: the caller's
 * messages, then their sessions (every device), then the user. Call again
 * while `done` is false; after the last step this session id is gone and the
 * browser should make a new one.
 */
export const remove = mutationWithSession({
  args: {},
  returns: v.object({ done: v.boolean() }),
  handler: (ctx) => deleteEverythingStep(ctx, ctx.session),
});
