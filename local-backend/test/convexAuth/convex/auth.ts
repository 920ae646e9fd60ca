/**
 * Convex Auth with the Password provider, the library unmodified.
 *
 * Hashing uses the provider's documented `crypto` option with the chat's own
 * PBKDF2 through Web Crypto (`convex/model/passwords.ts`, which says why)
 * instead of its default, Lucia's pure-JS Scrypt: Scrypt runs inside the
 * `auth:store` mutation for ~0.7 s of CPU here, which on a loaded machine
 * passes the local backend's 1 s mutation budget (it counts wall time).
 */
import { Password } from "@convex-dev/auth/providers/Password";
import { convexAuth } from "@convex-dev/auth/server";
import {
  hashPassword,
  verifyPassword,
} from "../../../../convex/model/passwords";

export const { auth, signIn, signOut, store, isAuthenticated } = convexAuth({
  providers: [
    Password({
      crypto: { hashSecret: hashPassword, verifySecret: verifyPassword },
    }),
  ],
  // Short-lived tokens, so a test sees the client refresh one.
  jwt: { durationMs: 12_000 },
});
