/**
 * Signing in, signing up and signing out, with this browser's session secret
 * rotated each time (the server ends the old one in the same transaction).
 *
 * - Sign-up: `accounts.prepareUpgrade` gives a one-time ticket for the current
 *   guest, which goes with the form, so the account *is* that guest (same id,
 *   name and messages). Sign-in to an existing account: `accounts.afterSignIn`
 *   merges this device's guest into it. Both end with `afterSignIn`, which
 *   needs the new token, so it waits until the client has it accepted.
 * - Sign-out: `accounts.signOutDevice` (or `forgetDevice`) makes this device a
 *   fresh guest with a new secret, then Convex Auth's `signOut` drops the
 *   tokens. "Forget" also clears what the browser remembers for signing in.
 *
 * ```ts
 * const account = useAccount();
 * await account.signIn({ email, password, flow: "signUp" });
 * ```
 */
import { useCallback, useEffect, useMemo, useRef } from "react";
import { useAuthActions } from "@convex-dev/auth/react";
import { useConvexAuth } from "convex/react";
import {
  useSessionId,
  useSessionMutation,
} from "convex-helpers/react/sessions";
import { api } from "../../convex/_generated/api";
import { forgetRememberedEmail, rememberEmail } from "../lib/rememberedEmail";

/** How long a fresh token may take to be accepted before sign-in gives up. */
const AUTH_WAIT_MS = 15_000;

export type Credentials = {
  email: string;
  password: string;
  flow: "signIn" | "signUp";
};

export function useAccount() {
  const { signIn, signOut } = useAuthActions();
  const [, refreshSessionId] = useSessionId();
  const prepareUpgrade = useSessionMutation(api.accounts.prepareUpgrade);
  const afterSignIn = useSessionMutation(api.accounts.afterSignIn);
  const signOutDevice = useSessionMutation(api.accounts.signOutDevice);
  const forgetDevice = useSessionMutation(api.accounts.forgetDevice);
  const whenAuthenticated = useWhenAuthenticated();

  const signInHere = useCallback(
    async ({ email, password, flow }: Credentials) => {
      const params: Record<string, string> = { email, password, flow };
      if (flow === "signUp") {
        params.upgradeTicket = (await prepareUpgrade()).ticket;
      }
      await signIn("password", params);
      await whenAuthenticated();
      await refreshSessionId(async (newSessionId) => {
        await afterSignIn({ newSessionId });
      });
      rememberEmail(email);
    },
    [signIn, prepareUpgrade, whenAuthenticated, refreshSessionId, afterSignIn],
  );

  const signOutHere = useCallback(
    async ({ forget }: { forget: boolean }) => {
      await refreshSessionId(async (newSessionId) => {
        await (forget ? forgetDevice : signOutDevice)({ newSessionId });
        // Before the new secret is used, so it is never sent with the token.
        await signOut();
      });
      if (forget) forgetRememberedEmail();
    },
    [refreshSessionId, forgetDevice, signOutDevice, signOut],
  );

  return useMemo(
    () => ({ signIn: signInHere, signOut: signOutHere }),
    [signInHere, signOutHere],
  );
}

/**
 * A function that resolves once the Convex client has a token the server
 * accepted, so the next call carries the account's identity.
 */
function useWhenAuthenticated(): () => Promise<void> {
  const { isAuthenticated } = useConvexAuth();
  const current = useRef(isAuthenticated);
  const waiters = useRef(new Set<() => void>());

  useEffect(() => {
    current.current = isAuthenticated;
    if (!isAuthenticated) return;
    for (const resolve of waiters.current) resolve();
    waiters.current.clear();
  }, [isAuthenticated]);

  return useCallback(
    () =>
      new Promise<void>((resolve, reject) => {
        if (current.current) {
          resolve();
          return;
        }
        const timer = setTimeout(() => {
          waiters.current.delete(done);
          reject(new Error("The chat did not accept the new sign-in in time."));
        }, AUTH_WAIT_MS);
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        waiters.current.add(done);
      }),
    [],
  );
}
