/**
 * What a sync socket does when its peer misbehaves at the WebSocket level:
 * a peer that stops answering pings (a half-open connection) is dropped and
 * its subscriptions released; a peer that stops reading is disconnected with
 * a reason once its send buffer passes the cap. Intervals and caps are
 * shortened through the server's options.
 */
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { FunctionRunner } from "../functions/functionRunner.ts";
import { createIsolate } from "../functions/isolate.ts";
import { buildFunctions } from "../functions/loader.ts";
import { createSyscalls } from "../functions/syscalls.ts";
import { Database } from "../storage/database.ts";
import { SubscriptionHub } from "../sync/subscriptions.ts";
import { createApiServer } from "./server.ts";
import type { SyncSocketOptions } from "./syncSocket.ts";

const FIXTURE = path.resolve(import.meta.dirname, "../../test/fixture/convex");

let dir: string;
let db: Database;
let runner: FunctionRunner;
let hub: SubscriptionHub;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sync-socket-test-"));
  db = Database.open(dir);
  runner = new FunctionRunner(db);
  const isolate = createIsolate(await buildFunctions(FIXTURE), {
    convex: createSyscalls({ db, nested: runner.nested }),
    env: {},
    onStrayLog: () => undefined,
  });
  db.setSchema(isolate.schema);
  runner.setIsolate(isolate);
  hub = new SubscriptionHub(db, runner);
});
afterAll(() => {
  hub.close();
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function startServer(sync: SyncSocketOptions) {
  const api = createApiServer({
    hub,
    runner,
    instanceName: "test",
    loopbackOnly: true,
    sync,
  });
  await new Promise<void>((resolve) =>
    api.server.listen(0, "127.0.0.1", resolve),
  );
  const { port } = api.server.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}/api/1.48.0/sync`,
    close: () =>
      new Promise<void>((resolve) => {
        api.closeSockets();
        api.server.close(() => resolve());
        api.server.closeAllConnections();
      }),
  };
}

type Peer = {
  ws: WebSocket;
  messages: { type: string }[];
  closed: Promise<{ code: number; reason: string }>;
};

async function connect(
  url: string,
  query: { udfPath: string; args: object },
  options: WebSocket.ClientOptions = {},
): Promise<Peer> {
  const ws = new WebSocket(url, options);
  const messages: { type: string }[] = [];
  ws.on("message", (data: Buffer) =>
    messages.push(JSON.parse(data.toString("utf8")) as { type: string }),
  );
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on("close", (code, reason) =>
      resolve({ code, reason: reason.toString("utf8") }),
    ),
  );
  ws.on("error", () => undefined);
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  ws.send(
    JSON.stringify({
      type: "Connect",
      sessionId: crypto.randomUUID(),
      connectionCount: 0,
      lastCloseReason: "InitialConnect",
    }),
  );
  ws.send(
    JSON.stringify({
      type: "ModifyQuerySet",
      baseVersion: 0,
      newVersion: 1,
      modifications: [
        { type: "Add", queryId: 0, ...query, args: [query.args] },
      ],
    }),
  );
  await expect
    .poll(() => messages.some((m) => m.type === "Transition"), {
      timeout: 5_000,
    })
    .toBe(true);
  return { ws, messages, closed };
}

describe("sync sockets", () => {
  test("a peer that stops answering pings is dropped and its subscriptions released; a live one stays", async () => {
    const server = await startServer({ heartbeatMs: 250 });
    const before = hub.subscriptionCount;
    const live = await connect(server.url, {
      udfPath: "items:count",
      args: {},
    });
    const dead = await connect(
      server.url,
      { udfPath: "items:count", args: {} },
      { autoPong: false },
    );
    expect(hub.subscriptionCount).toBe(before + 2);
    await expect
      .poll(() => hub.subscriptionCount, { timeout: 5_000 })
      .toBe(before + 1);
    const closed = await dead.closed;
    // Terminated without a closing handshake, as a half-open socket must be.
    expect(closed.code).toBe(1006);
    expect(live.ws.readyState).toBe(WebSocket.OPEN);
    live.ws.close();
    await live.closed;
    await expect
      .poll(() => hub.subscriptionCount, { timeout: 5_000 })
      .toBe(before);
    await server.close();
  });

  test("a peer that stops reading is disconnected with a reason once its send buffer passes the cap", async () => {
    const cap = 1024 * 1024;
    const server = await startServer({ maxSendBufferBytes: cap });
    const group = `big-${crypto.randomUUID()}`;
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const outcome = await runner.runMutation({
        path: "items:insert",
        args: { group, rank: i, value: String(i).repeat(100_000) },
      });
      if (outcome.status !== "success") throw new Error(outcome.errorMessage);
      ids.push(outcome.value as string);
    }
    const before = hub.subscriptionCount;
    const slow = await connect(server.url, {
      udfPath: "items:range",
      args: { group },
    });
    expect(hub.subscriptionCount).toBe(before + 1);
    // The client stops reading: the kernel's buffers fill, then ours.
    (
      slow.ws as unknown as { _socket: import("node:net").Socket }
    )._socket.pause();
    // Its own mutations keep going (answers are never held back) and each
    // changes the subscribed result, a megabyte a time.
    for (let i = 0; i < 200 && hub.subscriptionCount > before; i++) {
      slow.ws.send(
        JSON.stringify({
          type: "Mutation",
          requestId: i,
          udfPath: "items:patch",
          args: [{ id: ids[i % ids.length], rank: 100 + i }],
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(hub.subscriptionCount).toBe(before);
    (
      slow.ws as unknown as { _socket: import("node:net").Socket }
    )._socket.resume();
    const closed = await slow.closed;
    expect(closed.code).toBe(1013);
    expect(closed.reason).toMatch(/^SendBufferFull: /);
    await server.close();
  });

  test("a Transition of thousands of queries is sent as fragments of one message, which the peer reads whole", async () => {
    const server = await startServer({});
    // The server's sockets live in this process: watch what it sends.
    const sent = vi.spyOn(WebSocket.prototype, "send");
    const fragments = () =>
      sent.mock.calls.filter(
        ([, options]) => typeof options === "object" && options.fin === false,
      ).length;
    try {
      const group = `many-${crypto.randomUUID()}`;
      const peer = await connect(server.url, {
        udfPath: "items:count",
        args: {},
      });
      const queries = 2_500;
      peer.ws.send(
        JSON.stringify({
          type: "ModifyQuerySet",
          baseVersion: 1,
          newVersion: 2,
          modifications: Array.from({ length: queries }, (_, i) => ({
            type: "Add",
            queryId: 1 + i,
            udfPath: "items:range",
            args: [{ group: `${group}-${i}` }],
          })),
        }),
      );
      const transition = () =>
        (
          peer.messages as {
            type: string;
            endVersion?: { querySet: number };
            modifications?: { queryId: number; value?: unknown }[];
          }[]
        ).find((m) => m.type === "Transition" && m.endVersion?.querySet === 2);
      await expect
        .poll(() => transition() !== undefined, { timeout: 30_000 })
        .toBe(true);
      const ids = transition()!.modifications!.map((m) => m.queryId);
      expect(ids.length).toBe(queries);
      expect(new Set(ids).size).toBe(queries);
      expect(
        transition()!.modifications!.every((m) => Array.isArray(m.value)),
      ).toBe(true);
      expect(fragments()).toBeGreaterThan(0);
      peer.ws.close();
      await peer.closed;
    } finally {
      sent.mockRestore();
      await server.close();
    }
  }, 60_000);
});
