/**
 * The sync protocol and HTTP surface at the wire level, with hand-written
 * frames: exactly-once mutations across dropped sockets and restarts, version
 * chaining, and what the backend does with frames a real client never sends.
 */
import { randomUUID } from "node:crypto";
import net from "node:net";
import type { GenericId } from "convex/values";
import WebSocket from "ws";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { decodeTs, encodeTs } from "../src/values/wire.ts";
import {
  api,
  CLIENT_VERSION,
  type MutationResponse,
  postFunction,
  rawHttp,
  type RawSyncClient,
  startTestBackend,
  syncUrl,
  type TestBackend,
  type Transition,
  waitFor,
  withTimeout,
  ZERO_TS,
} from "./helpers.ts";

type Message = { _id: GenericId<"messages">; author: string; body: string };

let h: TestBackend;

beforeEach(async () => {
  h = await startTestBackend();
});

afterEach(async () => {
  await h.stop();
});

function addQuery(
  baseVersion: number,
  queryId: number,
  udfPath: string,
  args: Record<string, unknown> = {},
) {
  return {
    type: "ModifyQuerySet",
    baseVersion,
    newVersion: baseVersion + 1,
    modifications: [{ type: "Add", queryId, udfPath, args: [args] }],
  };
}

function sendMutation(requestId: number, body: string, author = "raw") {
  return {
    type: "Mutation",
    requestId,
    udfPath: "messages:send",
    args: [{ author, body }],
  };
}

function isTransition(m: { type: string }): m is Transition {
  return m.type === "Transition";
}

/** Waits for the Transition that makes a mutation's result visible (endVersion.ts >= its ts). */
function transitionCovering(
  raw: RawSyncClient,
  response: MutationResponse & { success: true },
): Promise<Transition> {
  return raw.next(
    (m): m is Transition =>
      isTransition(m) && decodeTs(m.endVersion.ts) >= decodeTs(response.ts),
    "a Transition covering the mutation",
  );
}

function assertSuccess(
  response: MutationResponse,
): asserts response is MutationResponse & { success: true } {
  expect(response.success, JSON.stringify(response)).toBe(true);
}

describe("exactly-once mutations", () => {
  async function rowsBy(author: string): Promise<Message[]> {
    return await h.httpClient().query(api.messages.byAuthor, { author });
  }

  /** Sends Connect, a subscription and Mutation 0, then drops the TCP connection unread. */
  async function sendAndDrop(sessionId: string, body: string): Promise<void> {
    const raw = await h.raw();
    await raw.connect(sessionId);
    await raw.send(addQuery(0, 0, "messages:list"));
    await raw.send(sendMutation(0, body, "once"));
    raw.terminate();
  }

  /** Reconnects as the same client and resends Mutation 0, as the real client does. */
  async function resend(
    sessionId: string,
    body: string,
    connectionCount: number,
  ): Promise<MutationResponse & { success: true }> {
    const raw = await h.raw();
    await raw.connect(sessionId, {
      connectionCount,
      lastCloseReason: null,
    });
    await raw.send(addQuery(0, 0, "messages:list"));
    await raw.send(sendMutation(0, body, "once"));
    const response = await raw.mutationResponse(0);
    assertSuccess(response);
    await transitionCovering(raw, response);
    return response;
  }

  test("a mutation resent after a dropped socket is not run twice", async () => {
    const sessionId = randomUUID();
    await sendAndDrop(sessionId, "exactly once");
    const [row] = await waitFor(async () => {
      const rows = await rowsBy("once");
      return rows.length > 0 && rows;
    }, "the first attempt to commit");

    const second = await resend(sessionId, "exactly once", 1);
    const third = await resend(sessionId, "exactly once", 2);

    expect(second.result).toBe(row._id);
    expect(third.result).toBe(second.result);
    expect(third.ts).toBe(second.ts);
    expect(await rowsBy("once")).toHaveLength(1);
  });

  test("a mutation resent after a backend restart is not run twice", async () => {
    const sessionId = randomUUID();
    await sendAndDrop(sessionId, "survives a restart");
    const [row] = await waitFor(async () => {
      const rows = await rowsBy("once");
      return rows.length > 0 && rows;
    }, "the first attempt to commit");

    await h.closeBackend();
    await h.restart();

    const after = await resend(sessionId, "survives a restart", 1);
    const again = await resend(sessionId, "survives a restart", 2);
    expect(after.result).toBe(row._id);
    expect(again.result).toBe(after.result);
    expect(again.ts).toBe(after.ts);
    expect(await rowsBy("once")).toHaveLength(1);

    // A new request id from the same session does run, later than the replayed commit.
    const raw = await h.raw();
    await raw.connect(sessionId, { connectionCount: 3, lastCloseReason: null });
    await raw.send(sendMutation(1, "a new request", "once"));
    const fresh = await raw.mutationResponse(1);
    assertSuccess(fresh);
    expect(decodeTs(fresh.ts)).toBeGreaterThan(decodeTs(after.ts));
    expect(await rowsBy("once")).toHaveLength(2);
  });

  test("the same request id from another session is a different mutation", async () => {
    const a = await h.raw();
    const b = await h.raw();
    await a.connect(randomUUID());
    await b.connect(randomUUID());
    await a.send(sendMutation(0, "from a", "sessions"));
    await b.send(sendMutation(0, "from b", "sessions"));
    const [ra, rb] = await Promise.all([
      a.mutationResponse(0),
      b.mutationResponse(0),
    ]);
    assertSuccess(ra);
    assertSuccess(rb);
    expect(ra.result).not.toBe(rb.result);
    expect(await rowsBy("sessions")).toHaveLength(2);
  });
});

describe("versions", () => {
  test("transitions on one socket always chain, and ts never decreases", async () => {
    const raw = await h.raw();
    await raw.connect(randomUUID());
    const http = h.httpClient();
    let querySet = 0;
    const live = new Map<number, number>(); // queryId -> count argument
    const otherWrites: Promise<unknown>[] = [];
    const ROUNDS = 12;

    for (let round = 0; round < ROUNDS; round++) {
      await raw.send(
        addQuery(querySet++, round, "messages:list", { count: round + 1 }),
      );
      live.set(round, round + 1);
      await raw.send(sendMutation(round, `ws ${round}`, "burst"));
      otherWrites.push(
        http.mutation(api.messages.send, { author: "other", body: `${round}` }),
      );
      if (round % 3 === 2) {
        await raw.send({
          type: "ModifyQuerySet",
          baseVersion: querySet,
          newVersion: querySet + 1,
          modifications: [{ type: "Remove", queryId: round - 1 }],
        });
        querySet++;
        live.delete(round - 1);
      }
    }
    await withTimeout(Promise.all(otherWrites), "the HTTP writes");
    const responses: MutationResponse[] = [];
    for (let i = 0; i < ROUNDS; i++)
      responses.push(await raw.mutationResponse(i));
    // One more mutation after every other write: its covering Transition sees them all.
    await raw.send(sendMutation(ROUNDS, "last", "burst"));
    const last = await raw.mutationResponse(ROUNDS);
    assertSuccess(last);
    const final = await transitionCovering(raw, last);
    expect(final.endVersion.querySet).toBe(querySet);

    const transitions = raw.transitions();
    expect(transitions[0].startVersion).toEqual({
      querySet: 0,
      identity: 0,
      ts: ZERO_TS,
    });
    for (let i = 1; i < transitions.length; i++) {
      expect(transitions[i].startVersion).toEqual(
        transitions[i - 1].endVersion,
      );
    }
    for (const t of transitions) {
      expect(decodeTs(t.endVersion.ts)).toBeGreaterThanOrEqual(
        decodeTs(t.startVersion.ts),
      );
      expect(t.endVersion.querySet).toBeGreaterThanOrEqual(
        t.startVersion.querySet,
      );
    }

    // Mutations from one socket are answered in order, with increasing commit ts,
    // and each answer is followed by a Transition that reaches its ts.
    const answered = raw.messages.filter(
      (m): m is MutationResponse => m.type === "MutationResponse",
    );
    expect(answered.map((m) => m.requestId)).toEqual(
      Array.from({ length: ROUNDS + 1 }, (_, i) => i),
    );
    for (let i = 0; i < answered.length; i++) {
      const response = answered[i];
      assertSuccess(response);
      if (i > 0) {
        const previous = answered[i - 1] as MutationResponse & { ts: string };
        expect(decodeTs(response.ts)).toBeGreaterThan(decodeTs(previous.ts));
      }
      const at = raw.messages.indexOf(response);
      expect(
        raw.messages
          .slice(at + 1)
          .some(
            (m) =>
              isTransition(m) &&
              decodeTs(m.endVersion.ts) >= decodeTs(response.ts),
          ),
      ).toBe(true);
    }

    // Replaying the modifications gives every live query its final result.
    const state = new Map<number, Message[]>();
    for (const t of transitions) {
      for (const m of t.modifications) {
        if (m.type === "QueryUpdated")
          state.set(m.queryId, m.value as Message[]);
        else if (m.type === "QueryRemoved") state.delete(m.queryId);
        else throw new Error(`query ${m.queryId} failed: ${m.errorMessage}`);
      }
    }
    const total = 2 * ROUNDS + 1;
    expect([...state.keys()].sort((a, b) => a - b)).toEqual(
      [...live.keys()].sort((a, b) => a - b),
    );
    for (const [queryId, count] of live) {
      expect(state.get(queryId)).toHaveLength(Math.min(count, total));
      expect(state.get(queryId)![0].body).toBe("last");
    }
  });

  test("Authenticate without a token moves the identity version in the next Transition", async () => {
    const raw = await h.raw();
    await raw.connect(randomUUID());
    await raw.send({ type: "Authenticate", tokenType: "None", baseVersion: 0 });
    await raw.send(addQuery(0, 0, "greeting"));
    const transition = await raw.next(
      (m): m is Transition =>
        isTransition(m) &&
        m.endVersion.identity === 1 &&
        m.endVersion.querySet === 1,
      "a Transition with identity 1",
    );
    expect(raw.transitions()[0].startVersion.identity).toBe(0);
    expect(transition.modifications).toEqual([
      expect.objectContaining({ type: "QueryUpdated", queryId: 0 }),
    ]);
    await raw.send({ type: "Authenticate", tokenType: "None", baseVersion: 1 });
    await raw.next(
      (m): m is Transition => isTransition(m) && m.endVersion.identity === 2,
      "a Transition with identity 2",
    );
  });

  test(
    "an idle socket receives app-level Pings, so browsers do not time out",
    { timeout: 45_000 },
    async () => {
      const raw = await h.raw();
      await raw.connect(randomUUID());
      await raw.send(addQuery(0, 0, "greeting"));
      await raw.next(isTransition, "the first Transition");
      // The real sync worker pings after 15 s of quiet; the client gives up after 60 s.
      await raw.next(
        (m): m is { type: "Ping" } => m.type === "Ping",
        "a Ping",
        30_000,
      );
      expect(raw.isClosed).toBe(false);
    },
  );

  test("a client that saw a later timestamp never sees time go backwards", async () => {
    const raw = await h.raw();
    const future = (BigInt(Date.now()) + 3_600_000n) * 1_000_000n;
    await raw.connect(randomUUID(), {
      connectionCount: 1,
      lastCloseReason: null,
      maxObservedTimestamp: encodeTs(future),
    });
    await raw.send(addQuery(0, 0, "messages:list"));
    await raw.send(sendMutation(0, "after the future"));
    const response = await raw.mutationResponse(0);
    assertSuccess(response);
    expect(decodeTs(response.ts)).toBeGreaterThan(future);
    const transition = await transitionCovering(raw, response);
    expect(decodeTs(transition.endVersion.ts)).toBeGreaterThan(future);
  });
});

describe("clock skew", () => {
  test("every Transition carries the client's clock minus the server's, measured at Connect", async () => {
    const raw = await h.raw();
    const hourAhead = 3_600_000;
    await raw.connect(randomUUID(), { clientTs: Date.now() + hourAhead });
    await raw.send(addQuery(0, 0, "messages:list"));
    // The query's own Transition first, so the mutation's is a second one.
    await raw.next(isTransition, "the query's first Transition");
    await raw.send(sendMutation(0, "tick"));
    const response = await raw.mutationResponse(0);
    assertSuccess(response);
    await transitionCovering(raw, response);
    const skews = raw.transitions().map((t) => t.clientClockSkew);
    expect(skews.length).toBeGreaterThan(1);
    for (const skew of skews) {
      // Latency only shrinks it; it is measured once, so every one is equal.
      expect(skew).toBe(skews[0]);
      expect(skew).toBeLessThanOrEqual(hourAhead);
      expect(skew).toBeGreaterThan(hourAhead - 60_000);
    }
  });
});

describe("protocol violations close only the offending socket", () => {
  const violations: [string, (raw: RawSyncClient) => Promise<void>][] = [
    ["malformed JSON", (raw) => raw.sendRaw("{not json")],
    ["an unknown message type", (raw) => raw.send({ type: "Bogus" })],
    [
      "a ModifyQuerySet with the wrong baseVersion",
      (raw) =>
        raw.send({
          type: "ModifyQuerySet",
          baseVersion: 3,
          newVersion: 4,
          modifications: [],
        }),
    ],
    [
      "a duplicate queryId in one ModifyQuerySet",
      (raw) =>
        raw.send({
          type: "ModifyQuerySet",
          baseVersion: 0,
          newVersion: 1,
          modifications: [
            { type: "Add", queryId: 0, udfPath: "messages:list", args: [{}] },
            { type: "Add", queryId: 0, udfPath: "messages:list", args: [{}] },
          ],
        }),
    ],
    [
      "a queryId added again later",
      async (raw) => {
        await raw.send(addQuery(0, 7, "messages:list"));
        await raw.send(addQuery(1, 7, "messages:list"));
      },
    ],
    [
      "a binary frame",
      (raw) => raw.sendRaw(Buffer.from("{}"), { binary: true }),
    ],
    [
      "a Mutation without args",
      (raw) =>
        raw.send({ type: "Mutation", requestId: 0, udfPath: "messages:send" }),
    ],
  ];

  test.each(violations)("%s", async (_name, violate) => {
    const healthy = h.client();
    const seen: Message[][] = [];
    healthy.onUpdate(api.messages.list, {}, (value) => seen.push(value));
    await waitFor(() => seen.length > 0, "the healthy client's first result");

    const raw = await h.raw();
    await raw.connect(randomUUID());
    await violate(raw);
    const closed = await withTimeout(
      raw.closed,
      "the offending socket to close",
    );

    expect(closed.code).not.toBe(1000);
    expect([1005, 1006]).not.toContain(closed.code);
    expect(closed.reason).not.toBe("");
    expect(raw.messages.filter((m) => m.type === "FatalError")).toEqual([]);

    const id = await h
      .httpClient()
      .mutation(api.messages.send, { author: "after", body: "still here" });
    await waitFor(
      () => seen[seen.length - 1].some((m) => m._id === id),
      "the healthy client to keep receiving updates",
    );
    expect(healthy.connectionState()).toMatchObject({
      isWebSocketConnected: true,
      connectionCount: 1,
    });
  });
});

describe("backpressure", () => {
  test("a socket whose mutations pile up behind a slow one is closed once 64 MiB of them wait, and the ones still queued never run", async () => {
    const raw = await h.raw();
    await raw.connect(randomUUID());
    // Runs about a second (its limit): the socket's mutations run in order.
    await raw.send({
      type: "Mutation",
      requestId: 0,
      udfPath: "runaway:writeThenSpin",
      args: [{ name: `spin-${randomUUID()}`, async: false }],
    });
    const author = `queued-${randomUUID()}`;
    const body = "x".repeat(500 * 1024);
    for (let i = 1; i <= 140 && !raw.isClosed; i++)
      await raw.send(sendMutation(i, body, author));
    const closed = await withTimeout(raw.closed, "the piling socket to close");
    expect(closed).toEqual({
      code: 4000,
      reason:
        "More than 10000 mutations and actions, or 67108864 characters of them, wait for their answers",
    });
    // Past the slow one's end: what was queued behind it was dropped.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(
      await h.httpClient().query(api.messages.byAuthor, { author }),
    ).toEqual([]);
  });
});

describe("frame limits", () => {
  test.each([
    // An escaped key: the scan that parses a large frame over several turns
    // cannot place the array, and the frame is parsed whole.
    ["parsed whole", '"modific\\u0061tions"'],
    ["parsed over several turns", '"modifications"'],
  ])(
    "a ModifyQuerySet of more than 500,000 modifications (%s) closes its socket with a reason, and others carry on",
    async (_name, key) => {
      const raw = await h.raw();
      await raw.connect(randomUUID());
      await raw.sendRaw(
        `{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,${key}:[${Array(600_000).fill("1").join(",")}]}`,
      );
      const closed = await withTimeout(raw.closed, "the socket to close");
      expect(closed).toEqual({
        code: 4000,
        reason:
          "ModifyQuerySet carries more than 500000 modifications, the most one message may",
      });
      expect(
        await h.httpClient().query(api.messages.byAuthor, { author: "nobody" }),
      ).toEqual([]);
    },
  );
});

describe("close reasons", () => {
  test("a reason with the client's multibyte text is cut to the 123 bytes a close frame holds, and the socket closes with it", async () => {
    const raw = await h.raw();
    await raw.connect(randomUUID());
    // "Unknown message type ..." quotes the type the client sent.
    await raw.send({ type: "é".repeat(200) });
    const closed = await withTimeout(
      raw.closed,
      "the offending socket to close",
    );
    expect(closed.code).toBe(4000);
    expect(closed.reason).toMatch(/^Unknown message type "é+$/);
    expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123);
    expect(Buffer.byteLength(closed.reason)).toBeGreaterThan(118);
  });
});

describe("endpoints", () => {
  test.each([
    `/api/${CLIENT_VERSION}/sync`,
    "/api/anything-at-all/sync",
    `//api/${CLIENT_VERSION}/sync`,
    `/api//${CLIENT_VERSION}/sync`,
  ])("the sync endpoint answers at %s", async (pathname) => {
    const raw = await h.raw(pathname);
    await raw.connect(randomUUID());
    await raw.send(addQuery(0, 0, "greeting"));
    const transition = await raw.next(isTransition, "a Transition");
    expect(transition.modifications).toEqual([
      expect.objectContaining({
        type: "QueryUpdated",
        queryId: 0,
        value: "hello from the default export",
      }),
    ]);
  });

  test("a WebSocket upgrade elsewhere is refused", async () => {
    const status = await upgradeStatus(syncUrl(h.url, "/api/1.48.0/other"));
    expect(status).toBe(404);
  });

  test.each([
    ["at another path", "/api/1.48.0/other", "127.0.0.1"],
    ["for another site", `/api/${CLIENT_VERSION}/sync`, "evil.example"],
  ])(
    "a client that resets its connection after an upgrade refused %s leaves the backend serving",
    async (_name, pathname, host) => {
      const port = Number(new URL(h.url).port);
      const refused = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(port, "127.0.0.1", () =>
          socket.write(
            `GET ${pathname} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
          ),
        );
        socket.once("data", (data) => {
          // A TCP RST: the backend's socket gets ECONNRESET.
          socket.resetAndDestroy();
          resolve(data.toString().split("\r\n")[0]);
        });
        socket.on("error", reject);
      });
      expect(refused).toMatch(/^HTTP\/1\.1 40[34] /);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(
        await h.httpClient().query(api.messages.byAuthor, { author: "nobody" }),
      ).toEqual([]);
    },
  );

  test("a Host header naming another site is refused on HTTP and on the WebSocket upgrade", async () => {
    const evil = { Host: "evil.example" };
    const mutation = await rawHttp(h.url, {
      method: "POST",
      path: "/api/mutation",
      headers: { ...evil, "Content-Type": "application/json" },
      body: JSON.stringify({
        path: "messages:send",
        format: "convex_encoded_json",
        args: [{ author: "evil", body: "rebinding" }],
      }),
    });
    expect(mutation.status).toBe(403);
    const instanceName = await rawHttp(h.url, {
      method: "GET",
      path: "/instance_name",
      headers: { Host: `evil.example:${h.backend.port}` },
    });
    expect(instanceName.status).toBe(403);
    expect(await upgradeStatus(syncUrl(h.url), evil)).toBe(403);

    expect(
      await h.httpClient().query(api.messages.byAuthor, { author: "evil" }),
    ).toEqual([]);
    const local = await rawHttp(h.url, {
      method: "GET",
      path: "/instance_name",
      headers: { Host: `localhost:${h.backend.port}` },
    });
    expect(local.status).toBe(200);
  });

  test("a CORS preflight is answered for the HTTP API", async () => {
    const origin = "http://localhost:5173";
    const preflight = await rawHttp(h.url, {
      method: "OPTIONS",
      path: "/api/mutation",
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,convex-client",
      },
    });
    expect(preflight.status).toBeGreaterThanOrEqual(200);
    expect(preflight.status).toBeLessThan(300);
    expect([origin, "*"]).toContain(
      preflight.headers["access-control-allow-origin"],
    );
    // A page's sendBeacon is credentialed: its preflight needs this header.
    expect(preflight.headers["access-control-allow-credentials"]).toBe("true");
    expect(preflight.headers["access-control-allow-methods"]).toMatch(/POST/);
    const allowed = String(
      preflight.headers["access-control-allow-headers"],
    ).toLowerCase();
    expect(allowed).toContain("content-type");
    expect(allowed).toContain("convex-client");

    const post = await rawHttp(h.url, {
      method: "POST",
      path: "/api/query",
      headers: { Origin: origin, "Content-Type": "application/json" },
      body: JSON.stringify({ path: "greeting", args: [{}] }),
    });
    expect(post.status).toBe(200);
    expect([origin, "*"]).toContain(
      post.headers["access-control-allow-origin"],
    );
  });

  test("HTTP refuses a token it cannot check, a GET on the API and unknown routes", async () => {
    const withToken = await rawHttp(h.url, {
      method: "POST",
      path: "/api/mutation",
      headers: {
        "Content-Type": "application/json",
        Authorization: "Bearer header.payload.signature",
      },
      body: JSON.stringify({
        path: "messages:send",
        args: [{ author: "token", body: "must not run anonymously" }],
      }),
    });
    expect(withToken.status).toBe(401);
    expect(
      await h.httpClient().query(api.messages.byAuthor, { author: "token" }),
    ).toEqual([]);

    const get = await rawHttp(h.url, { method: "GET", path: "/api/query" });
    expect(get.status).toBe(405);
    const unknown = await rawHttp(h.url, { method: "GET", path: "/nope" });
    expect(unknown.status).toBe(404);
  });

  test("GET /instance_name answers 200 with a name", async () => {
    const response = await rawHttp(h.url, {
      method: "GET",
      path: "/instance_name",
    });
    expect(response.status).toBe(200);
    expect(response.body.trim()).not.toBe("");
  });

  test("a request body over the size limit is answered 413, and the server keeps serving", async () => {
    const oversized = JSON.stringify({
      path: "messages:send",
      format: "convex_encoded_json",
      args: [{ author: "big", body: "x".repeat(65 * 1024 * 1024) }],
    });
    const response = await rawHttp(h.url, {
      method: "POST",
      path: "/api/mutation",
      headers: { "Content-Type": "application/json" },
      body: oversized,
    }).catch((error: unknown) => error as Error);

    if (response instanceof Error) {
      expect.fail(
        `the connection failed instead of answering 413: ${response.message}`,
      );
    }
    const { status, body } = response;
    expect(status).toBe(413);
    expect(JSON.parse(body)).toMatchObject({ code: "PayloadTooLarge" });
    expect(
      await h.httpClient().query(api.messages.byAuthor, { author: "big" }),
    ).toEqual([]);
  });

  test("HTTP accepts args as [obj] or obj, and refuses a body that is not JSON", async () => {
    const asArray = await postFunction(h.url, "query", "dir/nested:hello", {
      name: "array",
    });
    expect(asArray.body).toMatchObject({
      status: "success",
      value: "hello array from dir/nested",
    });
    const asObject = await rawHttp(h.url, {
      method: "POST",
      path: "/api/query",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        path: "dir/nested:hello",
        format: "convex_encoded_json",
        args: { name: "object" },
      }),
    });
    expect(JSON.parse(asObject.body)).toMatchObject({
      status: "success",
      value: "hello object from dir/nested",
    });
    const garbage = await rawHttp(h.url, {
      method: "POST",
      path: "/api/query",
      headers: { "Content-Type": "application/json" },
      body: "{nope",
    });
    expect(garbage.status).toBe(400);
  });
});

/** The HTTP status an upgrade request gets (101 when it is accepted). */
function upgradeStatus(
  url: string,
  headers: Record<string, string> = {},
): Promise<number> {
  return withTimeout(
    new Promise<number>((resolve, reject) => {
      const socket = new WebSocket(url, { headers });
      socket.once("open", () => {
        socket.terminate();
        resolve(101);
      });
      socket.once("unexpected-response", (_req, res) => {
        resolve(res.statusCode ?? 0);
        socket.terminate();
      });
      socket.once("error", reject);
    }),
    `the upgrade of ${url}`,
  );
}
