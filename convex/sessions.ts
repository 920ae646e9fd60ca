import { mutationWithSession } from "./lib/sessions";
import { toProfile, vProfile } from "./model/users";

/**
 * Called once by the client at start-up: creates this browser's session and
 * anonymous user if they do not exist yet, and returns the caller's profile.
 */
export const start = mutationWithSession({
  args: {},
  returns: vProfile,
  handler: (ctx) => toProfile(ctx.user),
});
