/**
 * The sync state machine against a fake socket (convex-js's `FakeWebSocket`
 * idea): exact message sequences, version chaining, and what a protocol
 * violation does, without a network in between.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  afterAll,
  beforeAll,
  beforeEach,
  describe,
  expect,
  test,
} from "vitest";
import { FunctionRunner } from "../functions/functionRunner.ts";
import { createIsolate } from "../functions/isolate.ts";
import { buildFunctions } from "../functions/loader.ts";
import { createSyscalls } from "../functions/syscalls.ts";
import { Database } from "../storage/database.ts";
import { decodeTs } from "../values/wire.ts";
import type { ServerMessage } from "./protocol.ts";
import { SubscriptionHub } from "./subscriptions.ts";
import { frameText, SyncSession } from "./syncSession.ts";
import { Scheduler } from "../functions/scheduler.ts";

const FIXTURE = path.resolve(import.meta.dirname, "../../test/fixture/convex");
const ZERO_TS = "AAAAAAAAAAA=";

let dir: string;
let db: Database;
let hub: SubscriptionHub;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sync-test-"));
  db = Database.open(dir);
  const runner = new FunctionRunner(db);
  const isolate = createIsolate(await buildFunctions(FIXTURE), {
    convex: createSyscalls({
      db,
      nested: runner.nested,
      extensions: [new Scheduler(db, runner).syscalls],
    }),
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

class FakeSocket {
  readonly sent: ServerMessage[] = [];
  /** Frames sent since the last `flush`. */
  unflushed = 0;
  /** Frames still unflushed at the end of the tick that sent them. */
  leftForTheTick = 0;
  closed: { code: number; reason: string } | null = null;
  readonly session = new SyncSession(hub, {
    send: (frame, written) => {
      this.sent.push(JSON.parse(frameText(frame)) as ServerMessage);
      if (this.unflushed++ === 0)
        process.nextTick(() => (this.leftForTheTick += this.unflushed));
      written?.();
    },
    flush: () => {
      this.unflushed = 0;
    },
    close: (code, reason) => {
      this.closed = { code, reason };
    },
  });

  receive(message: object | string): void {
    this.session.receive(
      typeof message === "string" ? message : JSON.stringify(message),
    );
  }

  async next<T extends ServerMessage["type"]>(
    type: T,
    after = 0,
  ): Promise<Extract<ServerMessage, { type: T }>> {
    for (let waited = 0; waited < 5_000; waited += 5) {
      const found = this.sent
        .slice(after)
        .find((m): m is Extract<ServerMessage, { type: T }> => m.type === type);
      if (found !== undefined) return found;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new Error(
      `no ${type} after message ${after}; got ${JSON.stringify(this.sent.map((m) => m.type))}`,
    );
  }

  transitions() {
    return this.sent.filter(
      (m): m is Extract<ServerMessage, { type: "Transition" }> =>
        m.type === "Transition",
    );
  }
}

let socket: FakeSocket;
beforeEach(() => {
  socket?.session.dispose();
  socket = new FakeSocket();
  socket.receive({
    type: "Connect",
    sessionId: crypto.randomUUID(),
    connectionCount: 0,
    lastCloseReason: "InitialConnect",
    clientTs: Date.now(),
  });
});

const addList = (queryId: number, base: number) => ({
  type: "ModifyQuerySet",
  baseVersion: base,
  newVersion: base + 1,
  modifications: [
    { type: "Add", queryId, udfPath: "messages:list", args: [{}] },
  ],
});

/** Sends a message on `socket`: its MutationResponse and the Transition after it. */
async function sendMessage(body: string) {
  const mark = socket.sent.length;
  socket.receive({
    type: "Mutation",
    requestId: 0,
    udfPath: "messages:send",
    args: [{ author: "a", body }],
  });
  const response = await socket.next("MutationResponse", mark);
  const transition = await socket.next(
    "Transition",
    socket.sent.indexOf(response),
  );
  return { mark, response, transition };
}

describe("SyncSession", () => {
  test("the first Transition starts at the zero version and carries the added query", async () => {
    socket.receive(addList(0, 0));
    const transition = await socket.next("Transition");
    expect(transition.startVersion).toEqual({
      querySet: 0,
      identity: 0,
      ts: ZERO_TS,
    });
    expect(transition.endVersion).toMatchObject({ querySet: 1, identity: 0 });
    expect(transition.modifications).toEqual([
      expect.objectContaining({
        type: "QueryUpdated",
        queryId: 0,
        journal: null,
        logLines: [],
      }),
    ]);
  });

  test("a ModifyQuerySet of 200,000 changes is taken whole: the next Transition holds the one query it left", async () => {
    // Each query added and removed again, the last one kept: more changes
    // than a function call's arguments can spread (V8's stack), and far
    // more than an update applies at once.
    const modifications: object[] = [];
    for (let queryId = 0; queryId < 100_000; queryId++) {
      modifications.push({
        type: "Add",
        queryId,
        udfPath: "messages:list",
        args: [{}],
      });
      if (queryId < 99_999) modifications.push({ type: "Remove", queryId });
    }
    socket.receive({
      type: "ModifyQuerySet",
      baseVersion: 0,
      newVersion: 1,
      modifications,
    });
    expect(socket.closed).toBeNull();
    const transition = await socket.next("Transition");
    expect(transition.endVersion).toMatchObject({ querySet: 1 });
    const updated = transition.modifications.filter(
      (m) => m.type === "QueryUpdated",
    );
    expect(updated).toEqual([
      expect.objectContaining({ type: "QueryUpdated", queryId: 99_999 }),
    ]);
    // Each removal comes as a QueryRemoved, as any other would.
    expect(
      transition.modifications.filter((m) => m.type === "QueryRemoved"),
    ).toHaveLength(99_999);
  });

  test("a MutationResponse is followed by a Transition at or after its commit timestamp", async () => {
    socket.receive(addList(0, 0));
    await socket.next("Transition");
    const { response, transition } = await sendMessage("hi");
    if (!response.success) throw new Error(response.result);
    expect(decodeTs(transition.endVersion.ts)).toBeGreaterThanOrEqual(
      decodeTs(response.ts),
    );
    expect(transition.modifications).toEqual([
      expect.objectContaining({
        type: "QueryUpdated",
        queryId: 0,
        value: [expect.objectContaining({ body: "hi" })],
      }),
    ]);
  });

  test("every frame is flushed to the socket by the burst that sent it, not left for the end of the tick", async () => {
    // The fan-out sends a room's frames in time slices; a write left for the
    // end of the tick would run after the slice, outside its budget.
    socket.receive(addList(0, 0));
    await socket.next("Transition");
    const { mark } = await sendMessage("flushed");
    // An action's answer goes out on its own, not through the commit path.
    socket.receive({
      type: "Action",
      requestId: 1,
      udfPath: "actions:sendAndCount",
      args: [{ author: "a", body: "from an action" }],
    });
    await socket.next("ActionResponse", mark);
    await new Promise(setImmediate);
    expect(socket.sent.length).toBeGreaterThan(mark + 2);
    expect(socket.leftForTheTick).toBe(0);
    expect(socket.unflushed).toBe(0);
  });

  test("every Transition starts where the previous one ended and ts never decreases", async () => {
    socket.receive(addList(0, 0));
    for (let i = 0; i < 5; i++) {
      socket.receive({
        type: "Mutation",
        requestId: i,
        udfPath: "messages:send",
        args: [{ author: "a", body: `m${i}` }],
      });
    }
    socket.receive({
      type: "ModifyQuerySet",
      baseVersion: 1,
      newVersion: 2,
      modifications: [{ type: "Remove", queryId: 0 }],
    });
    await expect
      .poll(() => socket.transitions().at(-1)?.endVersion.querySet, {
        timeout: 5_000,
      })
      .toBe(2);
    const transitions = socket.transitions();
    for (let i = 1; i < transitions.length; i++) {
      expect(transitions[i].startVersion).toEqual(
        transitions[i - 1].endVersion,
      );
      expect(decodeTs(transitions[i].endVersion.ts)).toBeGreaterThanOrEqual(
        decodeTs(transitions[i].startVersion.ts),
      );
    }
    const removedAt = transitions.findIndex((t) =>
      t.modifications.some((m) => m.type === "QueryRemoved" && m.queryId === 0),
    );
    expect(removedAt).toBeGreaterThanOrEqual(0);
    // Nothing about the query is sent after its removal.
    expect(
      transitions.slice(removedAt + 1).flatMap((t) => t.modifications),
    ).toEqual([]);
  });

  test("a failed mutation is answered at once with its error and no Transition is owed", async () => {
    socket.receive({
      type: "Mutation",
      requestId: 0,
      udfPath: "messages:send",
      args: [{ author: 1 }],
    });
    const response = await socket.next("MutationResponse");
    expect(response).toMatchObject({ success: false });
    expect(response.result).toMatch(/ArgumentValidationError/);
  });

  test("a ModifyQuerySet from the wrong base version closes the socket without FatalError", () => {
    socket.receive({
      type: "ModifyQuerySet",
      baseVersion: 3,
      newVersion: 4,
      modifications: [],
    });
    expect(socket.closed?.code).toBe(4000);
    expect(socket.sent.some((m) => m.type === "FatalError")).toBe(false);
    expect(socket.session.closed).toBe(true);
  });

  test("malformed frames close the socket", () => {
    socket.receive("{not json");
    expect(socket.closed?.reason).toMatch(/not valid JSON/);
  });

  test("Authenticate with no token bumps the identity version in the next Transition", async () => {
    socket.receive(addList(0, 0));
    await socket.next("Transition");
    const mark = socket.sent.length;
    socket.receive({ type: "Authenticate", tokenType: "None", baseVersion: 0 });
    const transition = await socket.next("Transition", mark);
    expect(transition.startVersion.identity).toBe(0);
    expect(transition.endVersion.identity).toBe(1);
  });

  test("a user token is refused with AuthError and the socket closes", async () => {
    socket.receive({
      type: "Authenticate",
      tokenType: "User",
      value: "a.b.c",
      baseVersion: 0,
    });
    const error = await socket.next("AuthError");
    expect(error).toMatchObject({ baseVersion: 0, authUpdateAttempted: true });
    expect(socket.closed).not.toBeNull();
  });

  test("an unchanged result is left out of the next Transition", async () => {
    socket.receive(addList(0, 0));
    socket.receive({
      type: "ModifyQuerySet",
      baseVersion: 1,
      newVersion: 2,
      modifications: [
        {
          type: "Add",
          queryId: 1,
          udfPath: "counters:get",
          args: [{ name: "unrelated" }],
        },
      ],
    });
    await expect
      .poll(() => socket.transitions().at(-1)?.endVersion.querySet, {
        timeout: 5_000,
      })
      .toBe(2);
    const mark = socket.sent.length;
    socket.receive({
      type: "Mutation",
      requestId: 0,
      udfPath: "messages:send",
      args: [{ author: "a", body: "again" }],
    });
    await socket.next("MutationResponse", mark);
    const transition = await socket.next("Transition", mark);
    const ids = (transition.modifications as { queryId: number }[]).map(
      (m) => m.queryId,
    );
    expect(ids).toEqual([0]);
  });
});
