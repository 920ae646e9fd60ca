/**
 * Convex Auth with e-mail and password (labs.convex.dev/auth). No e-mail is
 * sent (the embedded backend is offline), so there is no verification step;
 * on a real deployment add an e-mail or OAuth provider here (README,
 * "Accounts"). Which user an account belongs to is decided by
 * `model/accounts.ts`; password rules and hashing live in `model/passwords.ts`.
 *
 * The provider is the Password provider's own recipe, `ConvexCredentials`
 * with `createAccount` / `retrieveAccount` (`@convex-dev/auth` 0.0.95
 * `providers/Password.ts`), so that every refusal is a `ConvexError` with a
 * `code` the page puts in words: a plain `Error` reaches a production
 * client only as "Server Error".
 *
 * The page calls `signIn("password", { email, password, flow, upgradeTicket? })`.
 */
import { ConvexCredentials } from "@convex-dev/auth/providers/ConvexCredentials";
import {
  convexAuth,
  createAccount,
  retrieveAccount,
} from "@convex-dev/auth/server";
import { ConvexError } from "convex/values";
import type { ErrorData } from "./limits";
import { createOrUpdateMember } from "./model/accounts";
import {
  checkNewPassword,
  hashPassword,
  normalizeEmail,
  verifyPassword,
} from "./model/passwords";

const PROVIDER = "password";

export const { auth, signIn, signOut, store, isAuthenticated } = convexAuth({
  providers: [
    ConvexCredentials({
      id: PROVIDER,
      authorize: async (params, ctx) => {
        const email = normalizeEmail(params.email);
        if (params.flow === "signUp") {
          const secret = checkNewPassword(params.password);
          const created = await createAccount(ctx, {
            provider: PROVIDER,
            account: { id: email, secret },
            // `upgradeTicket` is only read by `createOrUpdateMember`, never stored.
            profile: {
              email,
              name: "",
              isAnonymous: false,
              ...(typeof params.upgradeTicket === "string"
                ? { upgradeTicket: params.upgradeTicket }
                : {}),
            },
          }).catch((error: unknown) => {
            // `createAccountFromCredentials`: "Account <id> already exists".
            throw /already exists/.test(String(error))
              ? new ConvexError<ErrorData>({
                  code: "EMAIL_TAKEN",
                  message: "An account with this e-mail already exists.",
                })
              : error;
          });
          return { userId: created.user._id };
        }
        if (params.flow === "signIn") {
          const secret =
            typeof params.password === "string" ? params.password : "";
          const found = await retrieveAccount(ctx, {
            provider: PROVIDER,
            account: { id: email, secret },
          }).catch((error: unknown) => {
            throw signInRefusal(error);
          });
          return { userId: found.user._id };
        }
        throw new Error('flow must be "signUp" or "signIn".');
      },
      crypto: { hashSecret: hashPassword, verifySecret: verifyPassword },
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

/** `retrieveAccountWithCredentials` fails with one of these words. */
function signInRefusal(error: unknown): unknown {
  const text = String(error);
  if (/InvalidAccountId|InvalidSecret/.test(text)) {
    // One answer for both, so the form does not reveal who has an account.
    return new ConvexError<ErrorData>({
      code: "WRONG_PASSWORD",
      message: "Wrong e-mail or password.",
    });
  }
  if (/TooManyFailedAttempts/.test(text)) {
    return new ConvexError<ErrorData>({
      code: "TOO_MANY_ATTEMPTS",
      message: "Too many wrong passwords; try again later.",
    });
  }
  return error;
}
