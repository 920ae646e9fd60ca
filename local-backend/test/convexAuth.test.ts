/**
 * Convex Auth (`@convex-dev/auth` 0.0.95, Password provider) runs unmodified
 * on the local backend: the app in `test/convexAuth/convex` is the library's
 * documented setup, keys come from `npm run backend -- auth-keys`, and the
 * client side follows `ConvexAuthProvider` (`@convex-dev/auth/src/react`):
 * `auth:signIn` / `auth:signOut` through the client, token refresh through an
 * unauthenticated `ConvexHttpClient`, tokens handed to `client.setAuth`.
 */
import { fileURLToPath } from "node:url";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { missingAuthKeys, runCommand } from "../src/commands.ts";
import { type Backend, startBackend } from "../src/index.ts";
import { EnvironmentStore } from "../src/storage/environment.ts";
import {
  quietLogger,
  rejection,
  removeDir,
  tempDir,
  waitFor,
} from "./helpers.ts";

const FUNCTIONS = fileURLToPath(
  new URL("./convexAuth/convex", import.meta.url),
);
const api = anyApi;
type Tokens = { token: string; refreshToken: string } | null;
type Viewer = { userId: string; email: string | null } | null;

let backend: Backend;
let dataDir: string;
const clients: ConvexClient[] = [];

beforeAll(async () => {
  dataDir = tempDir("convex-auth");
  const errors: string[] = [];
  expect(
    runCommand(
      ["auth-keys"],
      { data: dataDir },
      { out: () => undefined, err: (l) => errors.push(l) },
    ),
  ).toBe(0);
  expect(errors).toEqual([
    "✔ Successfully set JWT_PRIVATE_KEY, JWKS, SITE_URL",
  ]);
  backend = await startBackend({
    functions: FUNCTIONS,
    data: dataDir,
    port: 0,
    sitePort: 0,
    watch: false,
    logger: quietLogger(),
  });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await backend.close();
  removeDir(dataDir);
});

/**
 * What `ConvexAuthProvider` does for a page, minus React: it keeps the tokens,
 * gives the client a `fetchAccessToken` that refreshes on demand, and clears
 * auth on sign-out.
 */
class AuthFlow {
  readonly client: ConvexClient;
  tokens: Tokens = null;
  refreshes = 0;
  readonly authChanges: boolean[] = [];

  constructor() {
    this.client = new ConvexClient(backend.url, {
      webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
      logger: false,
      unsavedChangesWarning: false,
    });
    clients.push(this.client);
  }

  async signIn(params: Record<string, string>): Promise<void> {
    const result = (await this.client.action(api.auth.signIn, {
      provider: "password",
      params,
    })) as { tokens?: Tokens };
    this.#setTokens(result.tokens ?? null);
  }

  async signOut(): Promise<void> {
    await this.client.action(api.auth.signOut, {});
    this.#setTokens(null);
  }

  #setTokens(tokens: Tokens): void {
    this.tokens = tokens;
    if (tokens === null) {
      this.client.client.clearAuth();
      return;
    }
    this.client.setAuth(
      async ({ forceRefreshToken }) => {
        if (!forceRefreshToken || this.tokens === null)
          return this.tokens?.token ?? null;
        // `unauthenticatedCall`: a fresh HTTP client with no token.
        const refreshed = (await new ConvexHttpClient(backend.url, {
          logger: false,
        }).action(api.auth.signIn, {
          refreshToken: this.tokens.refreshToken,
        })) as { tokens: Tokens };
        this.refreshes++;
        this.tokens = refreshed.tokens;
        return this.tokens?.token ?? null;
      },
      (isAuthenticated) => this.authChanges.push(isAuthenticated),
    );
  }
}

describe("Convex Auth with the Password provider", () => {
  test("sign up, sign out, sign in, a token refresh, and getAuthUserId in queries over sync and HTTP", async () => {
    const flow = new AuthFlow();
    const viewers: Viewer[] = [];
    flow.client.onUpdate(api.users.viewer, {}, (viewer: Viewer) =>
      viewers.push(viewer),
    );
    await waitFor(() => viewers.length > 0, "the signed-out viewer");
    expect(viewers.at(-1)).toBeNull();

    await flow.signIn({
      email: "ann@example.com",
      password: "correct horse battery",
      flow: "signUp",
    });
    await waitFor(() => flow.authChanges.includes(true), "the token accepted");
    const signedUp = await waitFor(
      () => viewers.at(-1) ?? null,
      "the viewer after sign-up",
    );
    expect(signedUp.email).toBe("ann@example.com");

    // The same token over the HTTP client.
    const http = new ConvexHttpClient(backend.url, { logger: false });
    http.setAuth(flow.tokens!.token);
    expect(await http.query(api.users.viewer, {})).toEqual(signedUp);

    const oldRefreshToken = flow.tokens!.refreshToken;
    await flow.signOut();
    await waitFor(() => viewers.at(-1) === null, "the viewer after sign-out");
    // A signed-out session's refresh token no longer works.
    expect(
      await new ConvexHttpClient(backend.url, { logger: false }).action(
        api.auth.signIn,
        { refreshToken: oldRefreshToken },
      ),
    ).toEqual({ tokens: null });

    const wrong = await rejection(
      flow.signIn({
        email: "ann@example.com",
        password: "wrong password!",
        flow: "signIn",
      }),
    );
    expect(wrong.message).toContain("InvalidSecret");

    await flow.signIn({
      email: "ann@example.com",
      password: "correct horse battery",
      flow: "signIn",
    });
    await waitFor(
      () => viewers.at(-1)?.userId === signedUp.userId,
      "the same user after sign-in",
    );

    // Tokens last 12 s (auth.ts). The client swaps the first token for a
    // fresh one at once, then refreshes 10 s before expiry (convex 1.48
    // `authentication_manager.ts`): wait for a token with a later `iat`.
    const before = flow.tokens!.token;
    await waitFor(
      () => flow.tokens !== null && flow.tokens.token !== before,
      "a refreshed token",
      20_000,
    );
    expect(flow.refreshes).toBeGreaterThan(0);
    expect(flow.authChanges.at(-1)).toBe(true);
    expect(await flow.client.query(api.users.viewer, {})).toEqual(
      expect.objectContaining({ userId: signedUp.userId }),
    );
    http.setAuth(flow.tokens!.token);
    expect(await http.query(api.users.viewer, {})).toMatchObject({
      userId: signedUp.userId,
    });
    expect(viewers.at(-1)).toMatchObject({ userId: signedUp.userId });
  });

  test("auth-keys sets what npx @convex-dev/auth sets, and refuses to replace keys without --force", () => {
    const env = new EnvironmentStore(dataDir).list();
    expect(env.JWT_PRIVATE_KEY).toMatch(
      /^-----BEGIN PRIVATE KEY----- [A-Za-z0-9+/= ]+ -----END PRIVATE KEY-----$/,
    );
    const jwks = JSON.parse(env.JWKS) as { keys: Record<string, string>[] };
    expect(jwks.keys).toEqual([
      { use: "sig", kty: "RSA", n: expect.any(String) as string, e: "AQAB" },
    ]);
    expect(env.SITE_URL).toBe("http://localhost:5173");
    const errors: string[] = [];
    expect(
      runCommand(
        ["auth-keys"],
        { data: dataDir },
        { out: () => undefined, err: (l) => errors.push(l) },
      ),
    ).toBe(1);
    expect(errors[0]).toMatch(/already set; pass --force/);
    expect(new EnvironmentStore(dataDir).list().JWKS).toBe(env.JWKS);
  });

  test("npm run dev and the test stacks get keys for a fresh data folder, and keep the ones a folder has", () => {
    const fresh = tempDir("convex-auth-fresh");
    try {
      const keys = missingAuthKeys(fresh);
      expect(Object.keys(keys).sort()).toEqual(["JWKS", "JWT_PRIVATE_KEY"]);
      expect(keys.JWT_PRIVATE_KEY).toMatch(/^-----BEGIN PRIVATE KEY----- /);
    } finally {
      removeDir(fresh);
    }
    expect(missingAuthKeys(dataDir)).toEqual({});
  });
});
