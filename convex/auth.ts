/**
 * Convex Auth with e-mail and password (labs.convex.dev/auth). No e-mail is
 * sent (the embedded backend is offline), so there is no verification step;
 * on a real deployment add `verify` or a magic-link / OAuth provider here.
 * Which user an account belongs to is decided by `model/accounts.ts`.
 */
import { Password } from "@convex-dev/auth/providers/Password";
import { convexAuth } from "@convex-dev/auth/server";
import { createOrUpdateMember } from "./model/accounts";

export const { auth, signIn, signOut, store, isAuthenticated } = convexAuth({
  providers: [
    Password({
      profile: (params) => ({
        email:
          typeof params.email === "string"
            ? params.email.trim().toLowerCase()
            : "",
        // Only read by `createOrUpdateMember` on sign-up; never stored.
        ...(typeof params.upgradeTicket === "string"
          ? { upgradeTicket: params.upgradeTicket }
          : {}),
        name: "",
        isAnonymous: false,
      }),
    }),
  ],
  callbacks: {
    createOrUpdateUser: (ctx, args) =>
      createOrUpdateMember(ctx, {
        existingUserId: args.existingUserId,
        profile: args.profile,
      }),
  },
});
