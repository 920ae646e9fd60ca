/**
 * User tokens and the admin key, end to end: an OIDC issuer served by the test
 * on a free port and a custom JWT provider with inline keys (the providers of
 * `test/identity/convex/auth.config.ts`), driven with the real clients and a
 * raw sync socket. Error texts are convex-backend's (`crates/authentication`).
 */
import {
  generateKeyPairSync,
  type KeyObject,
  sign,
  type JsonWebKey,
} from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi, makeFunctionReference } from "convex/server";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type Backend, startBackend } from "../src/index.ts";
import type { ServerMessage } from "../src/sync/protocol.ts";
import {
  quietLogger,
  RawSyncClient,
  rawHttp,
  rejection,
  removeDir,
  tempDir,
  waitFor,
} from "./helpers.ts";

const FUNCTIONS = fileURLToPath(new URL("./identity/convex", import.meta.url));
const api = anyApi;
type Identity = Record<string, unknown> | null;

// ---- keys and tokens -----------------------------------------------------------

type Key = { privateKey: KeyObject; jwk: JsonWebKey };

function rsaKey(kid: string): Key {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
  });
  return {
    privateKey,
    jwk: { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256" },
  };
}

function ecKey(kid: string): Key {
  const { privateKey, publicKey } = generateKeyPairSync("ec", {
    namedCurve: "P-256",
  });
  return {
    privateKey,
    jwk: { ...publicKey.export({ format: "jwk" }), kid, alg: "ES256" },
  };
}

function jwt(
  key: Key,
  alg: "RS256" | "ES256",
  claims: Record<string, unknown>,
): string {
  const encode = (value: unknown) =>
    Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = `${encode({ alg, typ: "JWT", kid: key.jwk.kid })}.${encode(claims)}`;
  const signature = sign(
    "sha256",
    Buffer.from(head),
    alg === "ES256"
      ? { key: key.privateKey, dsaEncoding: "ieee-p1363" }
      : key.privateKey,
  );
  return `${head}.${signature.toString("base64url")}`;
}

const nowS = () => Math.floor(Date.now() / 1000);

// ---- the test's OIDC issuer and the backend --------------------------------------

const oidcKey = rsaKey("oidc-1");
const strangerKey = rsaKey("oidc-1");
const customKey = ecKey("custom-1");
let issuer = "";
let issuerServer: http.Server;
let discoveryRequests = 0;
let backend: Backend;
let dataDir: string;
const clients: ConvexClient[] = [];
const raws: RawSyncClient[] = [];

beforeAll(async () => {
  issuerServer = http.createServer((req, res) => {
    if (req.url === "/.well-known/openid-configuration") {
      discoveryRequests++;
      res.writeHead(200, {
        "Content-Type": "application/json",
        "Cache-Control": "max-age=300",
      });
      res.end(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks` }));
    } else if (req.url === "/jwks") {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ keys: [oidcKey.jwk] }));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) =>
    issuerServer.listen(0, "127.0.0.1", resolve),
  );
  issuer = `http://127.0.0.1:${(issuerServer.address() as AddressInfo).port}`;
  dataDir = tempDir("identity");
  backend = await startBackend({
    functions: FUNCTIONS,
    data: dataDir,
    port: 0,
    sitePort: 0,
    watch: false,
    logger: quietLogger(),
    env: {
      OIDC_ISSUER: issuer,
      CUSTOM_JWKS: `data:application/json;base64,${Buffer.from(JSON.stringify({ keys: [customKey.jwk] })).toString("base64")}`,
    },
  });
});

afterAll(async () => {
  for (const raw of raws) raw.terminate();
  await Promise.all(clients.map((c) => c.close()));
  await backend.close();
  await new Promise((resolve) => issuerServer.close(resolve));
  removeDir(dataDir);
});

function client(): ConvexClient {
  const c = new ConvexClient(backend.url, {
    webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
    logger: false,
    unsavedChangesWarning: false,
  });
  clients.push(c);
  return c;
}

function oidcToken(claims: Record<string, unknown> = {}): string {
  return jwt(oidcKey, "RS256", {
    iss: issuer,
    sub: "user-1",
    aud: "test-app",
    iat: nowS(),
    exp: nowS() + 3600,
    ...claims,
  });
}

function customToken(claims: Record<string, unknown> = {}): string {
  return jwt(customKey, "ES256", {
    iss: "https://custom.example.com",
    sub: "custom-user",
    aud: "custom-app",
    iat: nowS(),
    exp: nowS() + 3600,
    ...claims,
  });
}

/** Connects a raw socket, authenticates with `token` and returns the AuthError the backend answers with. */
async function authErrorFor(
  token: string,
): Promise<Extract<ServerMessage, { type: "AuthError" }>> {
  const raw = await RawSyncClient.open(backend.url);
  raws.push(raw);
  await raw.connect("00000000-0000-4000-8000-000000000001");
  await raw.send({
    type: "Authenticate",
    tokenType: "User",
    value: token,
    baseVersion: 0,
  });
  const error = await raw.next(
    (m): m is Extract<ServerMessage, { type: "AuthError" }> =>
      m.type === "AuthError",
    "AuthError",
  );
  await raw.closed;
  return error;
}

function noProvider(): string {
  return `No auth provider found matching the given token. Check that your JWT's issuer and audience match one of your configured providers: [OIDC(domain=${issuer}, app_id=test-app), CustomJWT(issuer=https://custom.example.com, app_id=custom-app)]`;
}

// ---- tests ---------------------------------------------------------------------

describe("user tokens over the sync protocol", () => {
  test("an accepted OIDC token's identity reaches ctx.auth in queries, mutations and actions", async () => {
    const c = client();
    const changes: boolean[] = [];
    const seen: Identity[] = [];
    c.onUpdate(api.identity.me, {}, (identity: Identity) =>
      seen.push(identity),
    );
    await waitFor(() => seen.length > 0, "the anonymous result");
    expect(seen[0]).toBeNull();
    c.setAuth(
      () =>
        Promise.resolve(
          oidcToken({
            name: "Ann Lee",
            email: "ann@example.com",
            email_verified: true,
            picture: "https://example.com/ann.png",
            given_name: "Ann",
            org: { id: 7 },
            jti: "dropped",
          }),
        ),
      (isAuthenticated) => changes.push(isAuthenticated),
    );
    await waitFor(() => changes.includes(true), "the token to be accepted");
    const identity = await waitFor(
      () => seen.find((s) => s !== null),
      "the query to re-run under the new identity",
    );
    expect(identity).toEqual({
      tokenIdentifier: `${issuer}|user-1`,
      subject: "user-1",
      issuer,
      name: "Ann Lee",
      email: "ann@example.com",
      emailVerified: true,
      pictureUrl: "https://example.com/ann.png",
      givenName: "Ann",
      org: { id: 7 },
    });
    expect(await c.mutation(api.identity.meInMutation, {})).toMatchObject({
      tokenIdentifier: `${issuer}|user-1`,
    });
    expect(await c.action(api.identity.meInAction, {})).toMatchObject({
      direct: { subject: "user-1" },
      nested: { subject: "user-1" },
    });
  });

  test("discovery and keys are fetched once and cached for many verifications", async () => {
    const before = discoveryRequests;
    for (let i = 0; i < 3; i++) {
      const identity = (await new ConvexHttpClient(backend.url, {
        logger: false,
        auth: oidcToken({ sub: `cached-${i}` }),
      }).query(api.identity.me, {})) as Identity;
      expect(identity).toMatchObject({ subject: `cached-${i}` });
    }
    expect(discoveryRequests - before).toBeLessThanOrEqual(1);
  });

  test("a custom JWT (ES256, keys in a data: URI) is accepted; its claims pass through, nested ones flattened", async () => {
    const identity = (await new ConvexHttpClient(backend.url, {
      logger: false,
      auth: customToken({ name: "Cy", team: { id: "t1", role: "admin" } }),
    }).query(api.identity.me, {})) as Identity;
    expect(identity).toEqual({
      tokenIdentifier: "https://custom.example.com|custom-user",
      subject: "custom-user",
      issuer: "https://custom.example.com",
      name: "Cy",
      "team.id": "t1",
      "team.role": "admin",
    });
  });

  test("a token with a bad signature is refused with AuthError", async () => {
    const error = await authErrorFor(
      jwt(strangerKey, "RS256", {
        iss: issuer,
        sub: "user-1",
        aud: "test-app",
        iat: nowS(),
        exp: nowS() + 3600,
      }),
    );
    expect(error).toEqual({
      type: "AuthError",
      error:
        "Could not verify OIDC token claim. Check that the token signature is valid and the token hasn't expired.",
      baseVersion: 0,
      authUpdateAttempted: true,
    });
  });

  test("a token from an unknown issuer or for another audience matches no provider", async () => {
    expect(
      (await authErrorFor(oidcToken({ iss: "https://elsewhere.example.com" })))
        .error,
    ).toBe(noProvider());
    expect((await authErrorFor(oidcToken({ aud: "other-app" }))).error).toBe(
      noProvider(),
    );
  });

  test("an expired OIDC token is refused; custom JWTs get Convex's 5 s of leeway", async () => {
    expect((await authErrorFor(oidcToken({ exp: nowS() - 1 }))).error).toBe(
      "Could not verify OIDC token claim. Check that the token signature is valid and the token hasn't expired.",
    );
    const http = (token: string) =>
      new ConvexHttpClient(backend.url, { logger: false, auth: token });
    expect(
      await http(customToken({ exp: nowS() - 2 })).query(api.identity.me, {}),
    ).toMatchObject({ subject: "custom-user" });
    const refused = await rejection(
      http(customToken({ exp: nowS() - 60 })).query(api.identity.me, {}),
    );
    const body = JSON.parse(refused.message) as Record<string, string>;
    expect(body.code).toBe("InvalidAuthHeader");
    expect(body.message).toMatch(
      /^Could not validate token: Token expired (60|61) seconds ago$/,
    );
  });

  test("a refused client is told so and keeps working unauthenticated", async () => {
    const c = client();
    const changes: boolean[] = [];
    c.setAuth(
      () => Promise.resolve(oidcToken({ exp: nowS() - 10 })),
      (isAuthenticated) => changes.push(isAuthenticated),
    );
    await waitFor(() => changes.length > 0, "the auth outcome");
    expect(changes).toEqual([false]);
    expect(await c.query(api.identity.me, {})).toBeNull();
  });

  test("users sharing a subscription each get their own result", async () => {
    const [a, b, anon] = [client(), client(), client()];
    a.setAuth(() => Promise.resolve(oidcToken({ sub: "alice" })));
    b.setAuth(() => Promise.resolve(oidcToken({ sub: "bob" })));
    const results = new Map<string, Identity>();
    for (const [name, c] of [
      ["a", a],
      ["b", b],
      ["anon", anon],
    ] as const) {
      c.onUpdate(api.identity.me, {}, (identity: Identity) =>
        results.set(name, identity),
      );
    }
    await waitFor(
      () =>
        results.get("a")?.subject === "alice" &&
        results.get("b")?.subject === "bob" &&
        results.has("anon"),
      "each client's own identity",
    );
    expect(results.get("anon")).toBeNull();
  });

  test("a token that expires during the session gets AuthError with authUpdateAttempted false", async () => {
    const raw = await RawSyncClient.open(backend.url);
    raws.push(raw);
    await raw.connect("00000000-0000-4000-8000-000000000002");
    await raw.send({
      type: "Authenticate",
      tokenType: "User",
      value: oidcToken({ exp: nowS() + 2 }),
      baseVersion: 0,
    });
    await raw.next(
      (m): m is Extract<ServerMessage, { type: "Transition" }> =>
        m.type === "Transition" && m.endVersion.identity === 1,
      "the identity to be accepted",
    );
    const error = await raw.next(
      (m): m is Extract<ServerMessage, { type: "AuthError" }> =>
        m.type === "AuthError",
      "AuthError at expiry",
    );
    expect(error).toMatchObject({
      baseVersion: 1,
      authUpdateAttempted: false,
    });
  });
});

describe("user tokens over HTTP", () => {
  test("Authorization: Bearer reaches queries, and a refused token gets 401 with Convex's code", async () => {
    const ok = new ConvexHttpClient(backend.url, { logger: false });
    ok.setAuth(oidcToken({ sub: "http-user" }));
    expect(await ok.query(api.identity.me, {})).toMatchObject({
      tokenIdentifier: `${issuer}|http-user`,
    });
    const response = await rawHttp(backend.url, {
      method: "POST",
      path: "/api/query",
      headers: {
        "Content-Type": "application/json",
        Authorization: `Bearer ${oidcToken({ aud: "nope" })}`,
      },
      body: JSON.stringify({ path: "identity:me", args: [{}] }),
    });
    expect(response.status).toBe(401);
    expect(JSON.parse(response.body)).toEqual({
      code: "NoAuthProvider",
      message: noProvider(),
    });
  });

  test("HTTP actions see the Bearer identity; a refused token fails only getUserIdentity", async () => {
    const get = async (authorization?: string) =>
      (await (
        await fetch(`${backend.siteUrl}/me`, {
          headers:
            authorization === undefined ? {} : { Authorization: authorization },
        })
      ).json()) as Record<string, unknown>;
    expect(await get()).toEqual({ identity: null });
    expect(
      await get(`Bearer ${oidcToken({ sub: "site-user" })}`),
    ).toMatchObject({ identity: { subject: "site-user" } });
    expect(await get(`Bearer ${oidcToken({ aud: "nope" })}`)).toEqual({
      refused: noProvider(),
    });
  });
});

describe("the admin key", () => {
  test("runs internal functions over HTTP and acts as a user; a wrong key is refused", async () => {
    const admin = new ConvexHttpClient(backend.url, { logger: false });
    const internalMe = makeFunctionReference<"query">("identity:internalMe");
    expect(
      (await rejection(admin.query(internalMe as never, {}))).message,
    ).toContain("Could not find public function for 'identity:internalMe'");
    (admin as unknown as { setAdminAuth(key: string): void }).setAdminAuth(
      backend.adminKey,
    );
    expect(await admin.query(internalMe as never, {})).toBeNull();
    (
      admin as unknown as {
        setAdminAuth(key: string, identity: Record<string, unknown>): void;
      }
    ).setAdminAuth(backend.adminKey, { subject: "acted", issuer: "https://x" });
    expect(await admin.query(internalMe as never, {})).toEqual({
      subject: "acted",
      issuer: "https://x",
      tokenIdentifier: "https://x|acted",
    });
    const wrong = await rawHttp(backend.url, {
      method: "POST",
      path: "/api/query",
      headers: {
        "Content-Type": "application/json",
        Authorization: `Convex ${backend.adminKey}x`,
      },
      body: JSON.stringify({ path: "identity:me", args: [{}] }),
    });
    expect(wrong.status).toBe(401);
    expect(JSON.parse(wrong.body)).toEqual({
      code: "BadAdminKey",
      message: "The provided admin key was invalid for this instance",
    });
  });

  test("POST /api/function and /api/run/<path> run any kind of function, as npx convex run does", async () => {
    const admin = new ConvexHttpClient(backend.url, { logger: false });
    (admin as unknown as { setAdminAuth(key: string): void }).setAdminAuth(
      backend.adminKey,
    );
    const run = (
      admin as unknown as {
        function(
          name: string,
          componentPath?: string,
          args?: object,
        ): Promise<unknown>;
      }
    ).function.bind(admin);
    expect(await run("identity:internalMe", undefined, {})).toBeNull();
    expect(await run("identity:meInAction", undefined, {})).toEqual({
      direct: null,
      nested: null,
    });
    const response = await rawHttp(backend.url, {
      method: "POST",
      path: "/api/run/identity/meInMutation",
      headers: {
        "Content-Type": "application/json",
        Authorization: `Bearer ${oidcToken({ sub: "runner" })}`,
      },
      body: JSON.stringify({ args: {}, format: "json" }),
    });
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body)).toMatchObject({
      status: "success",
      value: { subject: "runner" },
    });
  });

  test("sync Authenticate of type Admin acts as the impersonated user; a wrong key gets BadAdminKey", async () => {
    const raw = await RawSyncClient.open(backend.url);
    raws.push(raw);
    await raw.connect("00000000-0000-4000-8000-000000000003");
    await raw.send({
      type: "Authenticate",
      tokenType: "Admin",
      value: backend.adminKey,
      impersonating: { subject: "imp", issuer: "https://i" },
      baseVersion: 0,
    });
    await raw.send({
      type: "ModifyQuerySet",
      baseVersion: 0,
      newVersion: 1,
      modifications: [
        { type: "Add", queryId: 0, udfPath: "identity:internalMe", args: [{}] },
      ],
    });
    const transition = await raw.next(
      (m): m is Extract<ServerMessage, { type: "Transition" }> =>
        m.type === "Transition" &&
        m.modifications.some((x) => x.type === "QueryUpdated"),
      "the query result",
    );
    expect(transition.endVersion.identity).toBe(1);
    expect(transition.modifications).toEqual([
      expect.objectContaining({
        type: "QueryUpdated",
        value: {
          subject: "imp",
          issuer: "https://i",
          tokenIdentifier: "https://i|imp",
        },
      }),
    ]);

    const wrong = await RawSyncClient.open(backend.url);
    raws.push(wrong);
    await wrong.connect("00000000-0000-4000-8000-000000000004");
    await wrong.send({
      type: "Authenticate",
      tokenType: "Admin",
      value: "local-backend|wrong",
      baseVersion: 0,
    });
    expect(
      await wrong.next(
        (m): m is Extract<ServerMessage, { type: "AuthError" }> =>
          m.type === "AuthError",
        "AuthError",
      ),
    ).toEqual({
      type: "AuthError",
      error: "The provided admin key was invalid for this instance",
      baseVersion: 0,
      authUpdateAttempted: true,
    });
  });
});
