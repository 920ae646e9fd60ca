/** Convex Auth with the Password provider, unmodified. */
import { Password } from "@convex-dev/auth/providers/Password";
import { convexAuth } from "@convex-dev/auth/server";

export const { auth, signIn, signOut, store, isAuthenticated } = convexAuth({
  providers: [Password],
  // Short-lived tokens, so a test sees the client refresh one.
  jwt: { durationMs: 12_000 },
});
