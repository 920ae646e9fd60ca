/**
 * Subscriptions across sockets, through fake sockets and the fixture app:
 * the interval index never misses a re-run (a randomized model test against
 * fresh runs), identical subscriptions share one run and never see another
 * snapshot's or another identity's result, unchanged failures are not sent
 * again, a large room's Transitions go out in slices, and neither a socket
 * with a huge query set nor one that stops reading can hold the others.
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { JSONValue } from "convex/values";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  ANONYMOUS,
  Authenticator,
  TokenVerifier,
} from "../functions/authentication.ts";
import {
  FunctionRunner,
  type QueryRequest,
} from "../functions/functionRunner.ts";
import { createIsolate } from "../functions/isolate.ts";
import { buildFunctions } from "../functions/loader.ts";
import { createSyscalls } from "../functions/syscalls.ts";
import { TurnCounter } from "../../test/turnCounter.ts";
import { Database } from "../storage/database.ts";
import { decodeTs } from "../values/wire.ts";
import type { ServerMessage, StateModification } from "./protocol.ts";
import {
  sharingKey,
  SubscriptionHub,
  UNSUBSCRIBE_PER_SLICE,
} from "./subscriptions.ts";
import { type Frame, frameText, SyncSession } from "./syncSession.ts";

const FIXTURE = path.resolve(import.meta.dirname, "../../test/fixture/convex");
const ADMIN_KEY = "subscriptions-test-admin-key";
/** Lets a FakeClient act as any user (an admin key with an identity). */
const authenticator = new Authenticator(new TokenVerifier(), ADMIN_KEY);

let dir: string;
let db: Database;
let runner: FunctionRunner;
let hub: SubscriptionHub;
/** Query runs the hub made (not the tests' own fresh runs), by path. */
const queryRuns = new Map<string, number>();
/**
 * Groups whose `items:range` runs by the hub busy-wait this many ms first (a
 * slow query); each such run records the turn of the event loop it ran in
 * (`turns`, a test's count).
 */
const slowGroups = new Map<string, number>();
const slowRunTurns: number[] = [];
let turns: TurnCounter | null = null;
/** Snapshots the hub's sockets pinned (`FunctionRunner.pinSnapshot`), and released. */
let snapshotsPinned = 0;
let snapshotsReleased = 0;
/** While set, a pinned snapshot says it has expired (the WAL outgrew it) after this many runs. */
let expireAfterRuns: number | null = null;
/** While set, called as a snapshot pass checks its results against the commits since (`CommitWatch.conflicted`). */
let onCheck: (() => void) | null = null;
const checkedWatches = new WeakSet<object>();

/**
 * Distinct `items:range` queries over one group, each reading all of it
 * (their arguments differ, so no two share an entry).
 */
function distinctRanges(group: string, count: number) {
  return Array.from({ length: count }, (_, i) => ({
    udfPath: "items:range",
    args: { group, above: -1 - i },
  }));
}

/** Patches the items in turn, each write awaited, until `done()` or `max` writes. */
async function patchUntil(
  ids: string[],
  max: number,
  done: () => boolean,
): Promise<void> {
  for (let writes = 0; writes < max && !done();)
    await runner.runMutation({
      path: "items:patch",
      args: { id: ids[writes % ids.length], value: ++writes },
    });
}

/** Inserts `count` items of value 0 into `group`; their ids, in rank order. */
async function insertItems(group: string, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let rank = 0; rank < count; rank++) {
    const inserted = await runner.runMutation({
      path: "items:insert",
      args: { group, rank, value: 0 },
    });
    ids.push((inserted as { value: string }).value);
  }
  return ids;
}

function slowDown(request: QueryRequest): void {
  if (request.path !== "items:range") return;
  const args = (
    Array.isArray(request.args) ? request.args[0] : request.args
  ) as { group?: unknown } | null;
  const slowMs = slowGroups.get(String(args?.group));
  if (slowMs === undefined) return;
  slowRunTurns.push(turns?.count ?? 0);
  const end = performance.now() + slowMs;
  while (performance.now() < end);
}

/**
 * While set, every fsync waits for it (a slow disk); tests that set it
 * resolve and clear it themselves.
 */
let fsyncGate: Promise<void> | null = null;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "subscriptions-test-"));
  db = Database.open(dir, {
    syncHook: async (sync) => {
      await fsyncGate;
      return sync();
    },
  });
  runner = new FunctionRunner(db);
  // The hub's runs are the ones that file their result (`onValid`).
  const runQuery = runner.runQuery.bind(runner);
  runner.runQuery = (request, visibility, onValid) => {
    if (onValid !== undefined)
      queryRuns.set(request.path, (queryRuns.get(request.path) ?? 0) + 1);
    if (onValid !== undefined) slowDown(request);
    return runQuery(request, visibility, onValid);
  };
  // Runs at a snapshot (a starved socket's) are the hub's too.
  const pinSnapshot = runner.pinSnapshot.bind(runner);
  runner.pinSnapshot = () => {
    const pinned = pinSnapshot();
    if (pinned === null) return null;
    snapshotsPinned++;
    let runs = 0;
    let released = false;
    return {
      ts: pinned.ts,
      get expired() {
        return (
          pinned.expired ||
          (expireAfterRuns !== null && runs >= expireAfterRuns)
        );
      },
      run: (request, visibility) => {
        runs++;
        queryRuns.set(request.path, (queryRuns.get(request.path) ?? 0) + 1);
        slowDown(request);
        return pinned.run(request, visibility);
      },
      watch: (from) => {
        const watch = pinned.watch(from);
        if (!checkedWatches.has(watch)) {
          checkedWatches.add(watch);
          const conflicted = watch.conflicted.bind(watch);
          watch.conflicted = () => {
            onCheck?.();
            return conflicted();
          };
        }
        return watch;
      },
      release: () => {
        if (!released) snapshotsReleased++;
        released = true;
        pinned.release();
      },
    };
  };
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

type QueryState =
  | { ok: true; value: JSONValue; journal: string | null }
  | { ok: false; errorMessage: string; journal: string | null };

/** A client that applies every Transition to its own view of the query set. */
class FakeClient {
  readonly sent: ServerMessage[] = [];
  /** The frames as the socket got them (a Buffer may be shared with other sockets). */
  readonly frames: Frame[] = [];
  readonly state = new Map<number, QueryState>();
  readonly queries = new Map<number, { udfPath: string; args: JSONValue }>();
  closed: { code: number; reason: string } | null = null;
  /** Called after each Transition is applied, with the client's whole view. */
  onTransition: (() => void) | null = null;
  /** When false, frames stay "unwritten" until `flush()` (a client that stops reading). */
  reading = true;
  #unwritten: (() => void)[] = [];
  #version = 0;
  #identityVersion = 0;
  #nextQueryId = 0;
  readonly session = new SyncSession(
    hub,
    {
      send: (frame, written) => this.#receiveFrame(frame, written),
      flush: () => undefined,
      close: (code, reason) => {
        this.closed = { code, reason };
      },
    },
    authenticator,
  );

  constructor() {
    this.#receive({
      type: "Connect",
      sessionId: crypto.randomUUID(),
      connectionCount: 0,
      lastCloseReason: "InitialConnect",
    });
  }

  /** Acts as the user `subject` from now on. */
  actAs(subject: string): void {
    this.#receive({
      type: "Authenticate",
      tokenType: "Admin",
      value: ADMIN_KEY,
      baseVersion: this.#identityVersion++,
      impersonating: { subject, issuer: "https://test" },
    });
  }

  #receiveFrame(frame: Frame, written?: () => void): void {
    this.frames.push(frame);
    const message = JSON.parse(frameText(frame)) as ServerMessage;
    this.sent.push(message);
    if (message.type === "Transition") {
      for (const m of message.modifications) this.#apply(m);
      this.onTransition?.();
    }
    if (written === undefined) return;
    if (this.reading) written();
    else this.#unwritten.push(written);
  }

  add(udfPath: string, args: JSONValue): number {
    const queryId = this.#nextQueryId++;
    this.queries.set(queryId, { udfPath, args });
    this.#modify([{ type: "Add", queryId, udfPath, args: [args] }]);
    return queryId;
  }

  addMany(queries: { udfPath: string; args: JSONValue }[]): void {
    this.#modify(
      queries.map(({ udfPath, args }) => {
        const queryId = this.#nextQueryId++;
        this.queries.set(queryId, { udfPath, args });
        return { type: "Add", queryId, udfPath, args: [args] };
      }),
    );
  }

  remove(queryId: number): void {
    this.queries.delete(queryId);
    this.state.delete(queryId);
    this.#modify([{ type: "Remove", queryId }]);
  }

  mutate(requestId: number, udfPath: string, args: JSONValue): void {
    this.#receive({ type: "Mutation", requestId, udfPath, args: [args] });
  }

  flush(): void {
    this.reading = true;
    for (const written of this.#unwritten.splice(0)) written();
  }

  transitions() {
    return this.sent.filter(
      (m): m is Extract<ServerMessage, { type: "Transition" }> =>
        m.type === "Transition",
    );
  }

  #modify(modifications: object[]): void {
    this.#receive({
      type: "ModifyQuerySet",
      baseVersion: this.#version,
      newVersion: this.#version + 1,
      modifications,
    });
    this.#version++;
  }

  #receive(message: object): void {
    this.session.receive(JSON.stringify(message));
  }

  #apply(m: StateModification): void {
    if (m.type === "QueryRemoved") return;
    if (!this.queries.has(m.queryId)) return;
    this.state.set(
      m.queryId,
      m.type === "QueryUpdated"
        ? { ok: true, value: m.value, journal: m.journal }
        : { ok: false, errorMessage: m.errorMessage, journal: m.journal },
    );
  }
}

const stripRequestId = (message: string) =>
  message.replace(/^\[Request ID: [^\]]*\] /, "");

/** What each of the client's queries returns when run afresh now (with its journal). */
async function mismatches(client: FakeClient): Promise<string[]> {
  const wrong: string[] = [];
  for (const [queryId, { udfPath, args }] of client.queries) {
    const seen = client.state.get(queryId);
    const fresh = await runner.runQuery({
      path: udfPath,
      args,
      journal: seen?.journal ?? null,
    });
    const expected =
      fresh.status === "success"
        ? JSON.stringify(fresh.value)
        : stripRequestId(fresh.errorMessage);
    const actual =
      seen === undefined
        ? "(nothing yet)"
        : seen.ok
          ? JSON.stringify(seen.value)
          : stripRequestId(seen.errorMessage);
    if (actual !== expected)
      wrong.push(
        `${udfPath}(${JSON.stringify(args)}): saw ${actual}, fresh ${expected}`,
      );
  }
  return wrong;
}

/**
 * Each of the client's Transitions shows one view of the group its queries
 * all read (`distinctRanges`): every query saw it at the same commit.
 */
function expectOneViewEach(client: FakeClient): void {
  for (const transition of client.transitions()) {
    const views = new Set(
      transition.modifications.map((m) =>
        m.type === "QueryUpdated" ? JSON.stringify(m.value) : m.type,
      ),
    );
    expect(views.size).toBe(1);
  }
}

/** Waits (bounded) until every client's view equals fresh runs; fails with the differences. */
async function expectUpToDate(clients: FakeClient[], what: string) {
  let wrong: string[] = [];
  for (let attempt = 0; attempt < 400; attempt++) {
    wrong = (await Promise.all(clients.map(mismatches))).flat();
    if (wrong.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  expect(wrong, what).toEqual([]);
}

function random(seed: number) {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)];
  return { next, int, pick };
}

const GROUPS = ["a", "b", "c"];

describe("SubscriptionHub", () => {
  test("every subscription always equals a fresh run, over random writes and queries", async () => {
    const rng = random(7);
    const ids: string[] = [];
    const order = () => rng.pick(["asc", "desc"] as const);
    const randomQuery = (): { udfPath: string; args: JSONValue } => {
      const group = rng.pick(GROUPS);
      switch (rng.int(9)) {
        case 0: {
          const args: Record<string, JSONValue> = { group, order: order() };
          if (rng.next() < 0.6) args.above = rng.int(10);
          if (rng.next() < 0.6) args.below = rng.int(10);
          if (rng.next() < 0.5) args.inclusive = rng.next() < 0.5;
          return { udfPath: "items:range", args };
        }
        case 1:
          return {
            udfPath: "items:take",
            args: { group, count: 1 + rng.int(3), order: order() },
          };
        case 2:
          return { udfPath: "items:first", args: { group, order: order() } };
        case 3:
          return {
            udfPath: "items:unique",
            args: { group, rank: rng.int(10) },
          };
        case 4:
          return ids.length === 0
            ? { udfPath: "items:count", args: {} }
            : { udfPath: "items:get", args: { id: rng.pick(ids) } };
        case 5:
          return { udfPath: "items:count", args: {} };
        case 6:
          return { udfPath: "items:all", args: { order: order() } };
        case 7:
          return {
            udfPath: "items:groupsBetween",
            args: { after: "a", before: rng.pick(["b", "c", "d"]) },
          };
        default:
          return {
            udfPath: "items:page",
            args: {
              paginationOpts: { numItems: 1 + rng.int(3), cursor: null },
              ...(rng.next() < 0.5 ? { group } : {}),
              order: order(),
            },
          };
      }
    };
    const mutate = async () => {
      const kind = ids.length === 0 ? 0 : rng.int(4);
      const item = () => ({
        group: rng.pick(GROUPS),
        rank: rng.int(10),
        ...(rng.next() < 0.5 ? { value: rng.int(3) } : {}),
      });
      const outcome =
        kind === 0
          ? await runner.runMutation({ path: "items:insert", args: item() })
          : kind === 1
            ? await runner.runMutation({
                path: "items:patch",
                args: { id: rng.pick(ids), rank: rng.int(10) },
              })
            : kind === 2
              ? await runner.runMutation({
                  path: "items:replace",
                  args: { id: rng.pick(ids), ...item() },
                })
              : await runner.runMutation({
                  path: "items:remove",
                  args: { id: ids.splice(rng.int(ids.length), 1)[0] },
                });
      if (outcome.status !== "success") throw new Error(outcome.errorMessage);
      if (kind === 0) ids.push(outcome.value as string);
    };

    const clients = Array.from({ length: 4 }, () => new FakeClient());
    for (let step = 0; step < 120; step++) {
      const roll = rng.next();
      const client = rng.pick(clients);
      if (roll < 0.55) {
        await mutate();
      } else if (roll < 0.85 || client.queries.size === 0) {
        // Often the same query as another client's, so entries are shared.
        const other = rng.pick(clients).queries;
        const shared = other.size > 0 && rng.next() < 0.4;
        const query = shared ? rng.pick([...other.values()]) : randomQuery();
        client.add(query.udfPath, query.args);
      } else {
        client.remove(rng.pick([...client.queries.keys()]));
      }
      await expectUpToDate(clients, `step ${step}`);
    }
    for (const client of clients) client.session.dispose();
    expect(hub.subscriptionCount).toBe(0);
  });

  test("a Transition never mixes snapshots while queries run concurrently with commits", async () => {
    const rng = random(11);
    const a = `a-${crypto.randomUUID()}`;
    const b = `b-${crypto.randomUUID()}`;
    const transfer = (from: string, to: string, amount: number) =>
      runner.runMutation({
        path: "concurrency:transfer",
        args: { from, to, amount },
      });
    // Both counters exist from here on, and their sum is always 0 (an amount
    // of 0 would store -0, a float on the wire, which the sum below misreads).
    await transfer(a, b, 1);
    const mixed: string[] = [];
    const sumOf = (values: JSONValue[]) =>
      values.reduce<number>((sum, value) => sum + (value as number), 0);
    const clients = Array.from({ length: 3 }, () => new FakeClient());
    for (const [i, client] of clients.entries()) {
      // Each query pauses mid-run, so commits land while it runs.
      const ids = [
        client.add("concurrency:getAfterPause", { name: a }),
        client.add("concurrency:getAfterPause", { name: b }),
        client.add("concurrency:pairAfterPause", {
          first: i % 2 === 0 ? a : b,
          second: i % 2 === 0 ? b : a,
        }),
      ];
      client.onTransition = () => {
        const [x, y, pair] = ids.map((id) => client.state.get(id));
        if (x?.ok !== true || y?.ok !== true || pair?.ok !== true) return;
        const sums = [sumOf([x.value, y.value]), sumOf(pair.value as [])];
        if (sums.some((sum) => sum !== 0))
          mixed.push(`client ${i}: ${JSON.stringify([x, y, pair])}`);
      };
    }
    for (let step = 0; step < 60; step++) {
      const burst: Promise<unknown>[] = [];
      for (let i = rng.int(4); i > 0; i--) {
        const [from, to] = rng.next() < 0.5 ? [a, b] : [b, a];
        burst.push(transfer(from, to, 1 + rng.int(5)));
      }
      for (let turns = rng.int(3); turns >= 0; turns--)
        await new Promise((resolve) => setImmediate(resolve));
      await Promise.all(burst);
    }
    await expectUpToDate(clients, "after the transfers");
    expect(mixed).toEqual([]);
    // Transitions were sent while transfers committed, not only at the end.
    for (const client of clients)
      expect(client.transitions().length).toBeGreaterThan(2);
    for (const client of clients) client.session.dispose();
  });

  test("identical subscriptions share one run per commit, and a later subscriber never gets an older snapshot", async () => {
    const group = `shared-${crypto.randomUUID()}`;
    const args = { group, order: "asc" };
    const clients = Array.from({ length: 10 }, () => new FakeClient());
    for (const client of clients) client.add("items:range", args);
    await expectUpToDate(clients, "first results");
    const before = queryRuns.get("items:range") ?? 0;
    await runner.runMutation({
      path: "items:insert",
      args: { group, rank: 1 },
    });
    await expectUpToDate(clients, "after the insert");
    expect((queryRuns.get("items:range") ?? 0) - before).toBe(1);
    // A new subscriber after another write must see that write.
    await runner.runMutation({
      path: "items:insert",
      args: { group, rank: 2 },
    });
    const late = new FakeClient();
    late.add("items:range", args);
    await expectUpToDate([late, ...clients], "after the second insert");
    expect(late.state.get(0)).toMatchObject({
      ok: true,
      value: [{ rank: 1 }, { rank: 2 }],
    });
    for (const client of [late, ...clients]) client.session.dispose();
  });

  test("the sharing key separates identities, journals and arguments", () => {
    const base = {
      path: "items:range",
      args: { group: "a" },
      journal: null,
      identity: ANONYMOUS,
    };
    const keys = new Set([
      sharingKey(base),
      sharingKey({
        ...base,
        identity: {
          type: "actingUser",
          attributes: { tokenIdentifier: "i|u", subject: "u", issuer: "i" },
        },
      }),
      sharingKey({ ...base, journal: '{"end":"x"}' }),
      sharingKey({ ...base, args: { group: "b" } }),
    ]);
    expect(keys.size).toBe(4);
  });

  test("a failed query is sent again only when its error changes, not for a new request ID", async () => {
    const group = `unique-${crypto.randomUUID()}`;
    const first = await runner.runMutation({
      path: "items:insert",
      args: { group, rank: 1 },
    });
    if (first.status !== "success") throw new Error(first.errorMessage);
    await runner.runMutation({
      path: "items:insert",
      args: { group, rank: 1 },
    });
    const client = new FakeClient();
    const queryId = client.add("items:unique", { group, rank: 1 });
    await expectUpToDate([client], "the failure");
    expect(client.state.get(queryId)).toMatchObject({ ok: false });
    const failures = () =>
      client
        .transitions()
        .flatMap((t) => t.modifications)
        .filter((m) => m.type === "QueryFailed").length;
    expect(failures()).toBe(1);
    const runs = queryRuns.get("items:unique") ?? 0;
    // A write inside what the query read re-runs it; the error is the same.
    await runner.runMutation({
      path: "items:patch",
      args: { id: first.value as string, value: 5 },
    });
    await expect
      .poll(() => queryRuns.get("items:unique"), { timeout: 5_000 })
      .toBe(runs + 1);
    await expectUpToDate([client], "after the patch");
    expect(failures()).toBe(1);
    client.session.dispose();
  });

  test("a socket with 1,000 queries to run does not hold another socket's mutation", async () => {
    const crowded = new FakeClient();
    const other = new FakeClient();
    other.add("items:count", {});
    await expectUpToDate([other], "the other socket's first result");
    crowded.addMany(
      Array.from({ length: 1_000 }, (_, i) => ({
        udfPath: "items:range",
        args: { group: `crowd-${i}` },
      })),
    );
    other.mutate(0, "items:insert", { group: "crowd-x", rank: 0 });
    await expect
      .poll(
        () =>
          other.sent.findIndex((m) => m.type === "MutationResponse") >= 0 &&
          other.transitions().length >= 2,
        { timeout: 10_000 },
      )
      .toBe(true);
    // The mutation's Transition came while the crowded socket's first
    // Transition was still being computed, slice by slice.
    expect(crowded.transitions()).toHaveLength(0);
    await expect
      .poll(() => crowded.transitions().length, { timeout: 30_000 })
      .toBe(1);
    expect(crowded.state.size).toBe(1_000);
    crowded.session.dispose();
    other.session.dispose();
  });

  test("once a socket's update has run its queries 20 ms, the event loop turns after every query past a millisecond", async () => {
    const group = `long-${crypto.randomUUID()}`;
    // Each of its runs takes at least 1.2 ms.
    slowGroups.set(group, 1.2);
    const crowded = new FakeClient();
    turns = new TurnCounter();
    slowRunTurns.length = 0;
    crowded.addMany(distinctRanges(group, 200));
    await expect
      .poll(() => crowded.transitions().length, { timeout: 30_000 })
      .toBe(1);
    turns.stop();
    slowGroups.delete(group);
    // At most 17 runs fit in the first 20 ms; each later one ends its slice,
    // so it has a turn of its own (with 8 ms slices, about six shared one).
    const later = slowRunTurns.slice(17);
    expect(later.length).toBeGreaterThanOrEqual(183);
    expect(new Set(later).size).toBe(later.length);
    crowded.session.dispose();
  });

  test("updates of different sockets never run two slow queries in one slice", async () => {
    const group = `lanes-${crypto.randomUUID()}`;
    const sockets = Array.from({ length: 4 }, () => new FakeClient());
    sockets.forEach((socket, i) =>
      socket.add("items:range", { group, above: -1 - i }),
    );
    await expectUpToDate(sockets, "first results");
    // From now on each run takes longer than a whole slice; one commit
    // queues all four updates at once.
    slowGroups.set(group, 10);
    turns = new TurnCounter();
    slowRunTurns.length = 0;
    await runner.runMutation({
      path: "items:insert",
      args: { group, rank: 0 },
    });
    await expect
      .poll(() => sockets.every((s) => s.transitions().length === 2), {
        timeout: 10_000,
      })
      .toBe(true);
    turns.stop();
    slowGroups.delete(group);
    expect(slowRunTurns).toHaveLength(4);
    // Each lane looks at the slice before it runs a query, so each slow run
    // has a turn of its own.
    expect(new Set(slowRunTurns).size).toBe(4);
    for (const socket of sockets) socket.session.dispose();
  });

  test("a cheap socket's update goes before heavy sockets' updates queued before it, and does not wait for their lanes", async () => {
    const group = `heavy-${crypto.randomUUID()}`;
    const cheapGroup = `cheap-${crypto.randomUUID()}`;
    // Every run of these takes 10 ms, so their sockets' updates are heavy.
    slowGroups.set(group, 10);
    const heavy = Array.from({ length: 6 }, () => new FakeClient());
    heavy.forEach((socket, i) =>
      socket.add("items:range", { group, above: -1 - i }),
    );
    const cheap = new FakeClient();
    cheap.add("items:take", { group: cheapGroup, count: 1, order: "desc" });
    await expectUpToDate([...heavy, cheap], "first results");
    const order: string[] = [];
    heavy.forEach(
      (socket, i) => (socket.onTransition = () => order.push(`heavy${i}`)),
    );
    cheap.onTransition = () => order.push("cheap");
    // The heavy sockets' updates are queued first, the cheap one's after:
    // first in first out, it would wait for four lanes of 10 ms runs and
    // then behind the last two heavy ones.
    await Promise.all([
      runner.runMutation({ path: "items:insert", args: { group, rank: 0 } }),
      runner.runMutation({
        path: "items:insert",
        args: { group: cheapGroup, rank: 0 },
      }),
    ]);
    await expect.poll(() => order.length, { timeout: 10_000 }).toBe(7);
    slowGroups.delete(group);
    // At most HEAVY_LANES (2) heavy updates run at once, so a lane was free.
    expect(order.indexOf("cheap")).toBeLessThanOrEqual(2);
    await expectUpToDate([...heavy, cheap], "after the inserts");
    for (const socket of [...heavy, cheap]) socket.session.dispose();
  });

  test("a socket whose queries take several slices gets Transitions while another client keeps writing into all of them, each at one snapshot", async () => {
    const group = `busy-${crypto.randomUUID()}`;
    const ids = await insertItems(group, 20);
    const busy = new FakeClient();
    // Distinct queries, each reading the whole group: more than a slice runs.
    busy.addMany(distinctRanges(group, 30));
    // A writer in a closed loop into what every one of them read (bounded).
    await patchUntil(ids, 1_500, () => busy.transitions().length >= 3);
    expect(busy.transitions().length).toBeGreaterThanOrEqual(3);
    expectOneViewEach(busy);
    busy.session.dispose();
  });

  test("a socket whose queries cost far more than any hold gets consistent Transitions at snapshots while another client keeps writing into all of them", async () => {
    const group = `starved-${crypto.randomUUID()}`;
    const ids = await insertItems(group, 10);
    // 100 queries of 3 ms each: 300 ms a pass, three times what a socket
    // may hold commits off for, so only reads at a snapshot can serve it.
    slowGroups.set(group, 3);
    const pinnedBefore = snapshotsPinned;
    const busy = new FakeClient();
    busy.addMany(distinctRanges(group, 100));
    let writes = 0;
    /** The writer's commits by the time of each Transition. */
    const writesAt: number[] = [];
    busy.onTransition = () => writesAt.push(writes);
    while (writes < 3_000 && busy.transitions().length < 3)
      await runner.runMutation({
        path: "items:patch",
        args: { id: ids[writes % ids.length], value: ++writes },
      });
    slowGroups.delete(group);
    expect(busy.transitions().length).toBeGreaterThanOrEqual(3);
    expect(snapshotsPinned).toBeGreaterThan(pinnedBefore);
    // The writer went on while each pass ran: commits between Transitions.
    for (let i = 1; i < writesAt.length; i++)
      expect(writesAt[i]).toBeGreaterThan(writesAt[i - 1]);
    expectOneViewEach(busy);
    // Once the writer stops, it catches up with the latest state.
    await expectUpToDate([busy], "after the writer stopped");
    busy.session.dispose();
  });

  test("a Transition of 1,000 results is encoded over several turns after its pass's last check, and what commits in between comes in the next one", async () => {
    const group = `wide-${crypto.randomUUID()}`;
    const ids = await insertItems(group, 5);
    const wide = new FakeClient();
    const counter = new TurnCounter();
    /** Checks and large frames in order, with the turn and the latest commit of each. */
    const events: { kind: "check" | "frame"; turn: number; ts: bigint }[] = [];
    onCheck = () =>
      events.push({ kind: "check", turn: counter.count, ts: db.lastTs });
    /** The turns each large frame's encoding started and ended in. */
    const encoded: [number, number][] = [];
    const frames = hub.frames;
    const transition = frames.transition.bind(frames);
    const transitionInTurns = frames.transitionInTurns.bind(frames);
    const large = (parts: { updated: readonly unknown[] }) => {
      if (parts.updated.length < 1_000) return false;
      events.push({ kind: "frame", turn: counter.count, ts: db.lastTs });
      return true;
    };
    frames.transition = (parts) => {
      const frame = transition(parts);
      if (large(parts)) encoded.push([counter.count, counter.count]);
      return frame;
    };
    frames.transitionInTurns = async (parts, pace) => {
      const started = large(parts) ? counter.count : null;
      const frame = await transitionInTurns(parts, pace);
      if (started !== null) encoded.push([started, counter.count]);
      return frame;
    };
    try {
      wide.addMany(distinctRanges(group, 1_000));
      await patchUntil(ids, 5_000, () => wide.transitions().length >= 4);
    } finally {
      onCheck = null;
      frames.transition = transition;
      frames.transitionInTurns = transitionInTurns;
    }
    expect(wide.transitions().length).toBeGreaterThanOrEqual(4);
    expectOneViewEach(wide);
    const framed = events.filter((event) => event.kind === "frame");
    const checks = events.filter((event) => event.kind === "check");
    expect(framed.length).toBeGreaterThanOrEqual(3);
    // No turn both checks a pass's results and starts encoding a large
    // frame, and each is encoded over several turns.
    for (const frame of framed)
      expect(checks.map((check) => check.turn)).not.toContain(frame.turn);
    for (const [started, ended] of encoded)
      expect(ended).toBeGreaterThan(started);
    // The writer committed between some check and its frame: those commits
    // were not lost, the client ends up where fresh runs are.
    const committedBetween = framed.filter((frame) => {
      const before = events.slice(0, events.indexOf(frame)).reverse();
      const check = before.find((event) => event.kind === "check");
      return check !== undefined && frame.ts > check.ts;
    });
    expect(committedBetween.length).toBeGreaterThan(0);
    counter.stop();
    // Its last pass runs 1,000 queries: once it has sent the last commit,
    // its view must equal fresh runs.
    const written = db.lastTs;
    await expect
      .poll(() => decodeTs(wide.transitions().at(-1)!.endVersion.ts), {
        timeout: 20_000,
      })
      .toBeGreaterThanOrEqual(written);
    await expectUpToDate([wide], "after the writer stopped");
    wide.session.dispose();
  });

  test("a query set of 5,000 is applied at most 1,000 queries an update, and its first Transition holds all of them", async () => {
    const group = `many-${crypto.randomUUID()}`;
    const many = new FakeClient();
    /** Subscriptions the hub took in each of the socket's updates. */
    const perUpdate: number[] = [];
    const subscribe = hub.subscribe.bind(hub);
    hub.subscribe = (subscriber, queryId, query) => {
      if (subscriber === many.session) perUpdate[perUpdate.length - 1]++;
      return subscribe(subscriber, queryId, query);
    };
    const update = many.session.update.bind(many.session);
    many.session.update = (slot) => {
      perUpdate.push(0);
      return update(slot);
    };
    try {
      many.addMany(distinctRanges(group, 5_000));
      await expect
        .poll(() => many.transitions().length, { timeout: 30_000 })
        .toBe(1);
    } finally {
      hub.subscribe = subscribe;
    }
    expect(perUpdate.reduce((sum, n) => sum + n, 0)).toBe(5_000);
    expect(Math.max(...perUpdate)).toBeLessThanOrEqual(1_000);
    expect(many.transitions()[0].modifications).toHaveLength(5_000);
    await expectUpToDate([many], "its first Transition");
    const before = hub.subscriptionCount - 5_000;
    many.session.dispose();
    await expect.poll(() => hub.subscriptionCount).toBe(before);
  });

  test("a ModifyQuerySet of over 256 KiB is applied only after the event loop has polled, not in the turn that parsed it", async () => {
    const group = `large-frame-${crypto.randomUUID()}`;
    const large = new FakeClient();
    const before = hub.subscriptionCount;
    const queries = 3_000;
    large.addMany(distinctRanges(group, queries));
    expect(hub.subscriptionCount).toBe(before);
    // The check phase of the same turn: still nothing.
    await new Promise(setImmediate);
    expect(hub.subscriptionCount).toBe(before);
    await expect
      .poll(() => large.transitions().length, { timeout: 30_000 })
      .toBe(1);
    expect(hub.subscriptionCount).toBe(before + queries);
    await expectUpToDate([large], "its Transition");
    large.session.dispose();
    await expect.poll(() => hub.subscriptionCount).toBe(before);
  });

  test("frames after a large ModifyQuerySet wait while it is parsed over several turns, and are handled after it, in order", async () => {
    const group = `in-order-${crypto.randomUUID()}`;
    await insertItems(group, 3);
    const large = new FakeClient();
    const before = hub.subscriptionCount;
    large.addMany(distinctRanges(group, 3_000));
    // Sent before the large one is parsed: removes its first query, adds one.
    large.remove(0);
    large.add("items:range", { group, above: 1 });
    expect(hub.subscriptionCount).toBe(before);
    await expect
      .poll(() => large.transitions().at(-1)?.endVersion.querySet, {
        timeout: 30_000,
      })
      .toBe(3);
    expect(large.closed).toBeNull();
    expect(hub.subscriptionCount).toBe(before + 3_000);
    await expectUpToDate([large], "after the three changes");
    large.session.dispose();
    await expect.poll(() => hub.subscriptionCount).toBe(before);
  });

  test("a socket that sends more than a frame's worth while a large ModifyQuerySet is read is closed with a reason, and nothing of it stays", async () => {
    const group = `flood-${crypto.randomUUID()}`;
    const flood = new FakeClient();
    const before = hub.subscriptionCount;
    flood.addMany(distinctRanges(group, 3_000));
    // Never parsed: held while the large one is read, then refused.
    const mebibyte = " ".repeat(1 << 20);
    for (let i = 0; i < 64; i++) flood.session.receive(mebibyte);
    expect(flood.closed).toBeNull();
    flood.session.receive(mebibyte);
    expect(flood.closed?.code).toBe(4000);
    expect(flood.closed?.reason).toMatch(
      /^More than 10000 messages or 67108864 characters sent while earlier ones waited to be read/,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(hub.subscriptionCount).toBe(before);
    expect(flood.transitions()).toHaveLength(0);
  });

  test("frames of many sockets that arrive in one turn are handled inside the hub's slices, over several turns, each socket's in order", async () => {
    const group = `arrivals-${crypto.randomUUID()}`;
    await insertItems(group, 2);
    // Each socket's second ModifyQuerySet is refused unless its first was
    // handled before it (its base version).
    const room = Array.from({ length: 3_000 }, () => new FakeClient());
    for (const client of room) {
      client.add("items:range", { group });
      client.add("items:take", { group, count: 1, order: "asc" });
    }
    // All 9,000 frames arrived in this turn, far more than a slice's worth.
    expect(room.some((c) => c.session.waitingFrames > 0)).toBe(true);
    await expect
      .poll(() => room.every((c) => c.state.size === 2), { timeout: 30_000 })
      .toBe(true);
    expect(room.filter((c) => c.closed !== null)).toHaveLength(0);
    expect(room.every((c) => c.session.waitingFrames === 0)).toBe(true);
    await expectUpToDate(room, "both queries");
    for (const client of room) client.session.dispose();
  });

  test("a socket's frames that wait for a slice are handled before the next slice's updates, not behind a greedy socket's whole pass", async () => {
    const group = `greedy-${crypto.randomUUID()}`;
    await insertItems(group, 2);
    // 300 distinct queries of at least 1 ms each: a pass of 300 ms or more.
    slowGroups.set(group, 1);
    slowRunTurns.length = 0;
    const greedy = new FakeClient();
    const other = new FakeClient();
    greedy.addMany(distinctRanges(group, 300));
    // Until the greedy pass holds the slices (lanes run its queries back to
    // back inside each slice), then the other socket's frame arrives.
    while (slowRunTurns.length < 30)
      await new Promise((resolve) => setImmediate(resolve));
    let waited = false;
    for (let i = 0; i < 200 && !waited; i++) {
      other.add("items:count", {});
      waited = other.session.waitingFrames > 0;
      if (!waited) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(waited).toBe(true);
    const runsAtArrival = slowRunTurns.length;
    while (other.session.waitingFrames > 0)
      await new Promise((resolve) => setImmediate(resolve));
    const runsUntilHandled = slowRunTurns.length - runsAtArrival;
    slowGroups.delete(group);
    // At most what is left of the slice it arrived in (8 ms of 1 ms runs).
    expect(runsUntilHandled).toBeLessThanOrEqual(10);
    await expect
      .poll(() => other.transitions().length, { timeout: 10_000 })
      .toBeGreaterThanOrEqual(1);
    greedy.session.dispose();
    other.session.dispose();
  });

  test("a socket that keeps a backlog of frames gets its share of each slice, and another socket's update goes out while the backlog lasts", async () => {
    const group = `backlog-${crypto.randomUUID()}`;
    await insertItems(group, 1);
    const observer = new FakeClient();
    observer.add("items:range", { group });
    await expect
      .poll(() => observer.transitions().length, { timeout: 10_000 })
      .toBe(1);
    // Frames of ~180 KB (a few ms each to parse), 20 at every read of a real
    // socket, in the poll phase: more than the slices can take.
    const flooder = new FakeClient();
    const event = JSON.stringify({
      type: "Event",
      eventType: "flood",
      event: {
        pad: "y".repeat(150_000),
        items: Array.from({ length: 3_000 }, (_, i) => ({ i })),
      },
    });
    const server = net.createServer((socket) =>
      socket.on("data", () => {
        for (let i = 0; i < 20; i++) flooder.session.receive(event);
      }),
    );
    await new Promise<void>((resolve) =>
      server.listen(0, "127.0.0.1", resolve),
    );
    const pump = net.connect(
      (server.address() as net.AddressInfo).port,
      "127.0.0.1",
    );
    await new Promise((resolve) => pump.once("connect", resolve));
    let pumping = true;
    const write = (): void => {
      if (!pumping) return;
      pump.write("x");
      setImmediate(write);
    };
    write();
    try {
      await expect
        .poll(() => flooder.session.waitingFrames, { timeout: 10_000 })
        .toBeGreaterThan(40);
      await runner.runMutation({
        path: "items:insert",
        args: { group, rank: 1, value: 1 },
      });
      await expect
        .poll(() => observer.transitions().length, { timeout: 10_000 })
        .toBe(2);
      // While the backlog lasted: when frames took every slice, the update
      // went out only once the flooder was closed for its backlog.
      expect(flooder.closed).toBeNull();
      expect(flooder.session.waitingFrames).toBeGreaterThan(0);
    } finally {
      pumping = false;
      pump.destroy();
      server.close();
      flooder.session.dispose();
      observer.session.dispose();
    }
  });

  test("a socket's frame handler that throws is failed alone, and the sockets queued behind it are still served", async () => {
    // Frames wait for a slice only once the current one is used up.
    while (hub.receiving()) {
      /* spins to the slice's end */
    }
    const failed: unknown[] = [];
    let served = false;
    hub.whenReceiving(
      () => {
        throw new Error("handler broke");
      },
      (error) => failed.push(error),
    );
    hub.whenReceiving(
      () => {
        served = true;
      },
      () => undefined,
    );
    await expect.poll(() => served, { timeout: 5_000 }).toBe(true);
    expect(failed).toEqual([new Error("handler broke")]);
  });

  test("a closed socket's subscriptions are released inside the hub's slices, at most UNSUBSCRIBE_PER_SLICE in the turn that closed it, and soon all of them", async () => {
    const group = `closing-${crypto.randomUUID()}`;
    const before = hub.subscriptionCount;
    const closing = new FakeClient();
    const queries = 3 * UNSUBSCRIBE_PER_SLICE;
    closing.addMany(distinctRanges(group, queries));
    await expect
      .poll(() => closing.transitions().at(-1)?.modifications.length ?? 0, {
        timeout: 30_000,
      })
      .toBe(queries);
    expect(hub.subscriptionCount).toBe(before + queries);
    closing.session.dispose();
    expect(hub.subscriptionCount).toBe(
      before + queries - UNSUBSCRIBE_PER_SLICE,
    );
    // Nor in a microtask of the same turn. (Not "nor in its check phase":
    // whether a poll comes first depends on the phase the close ran in, and
    // the group writer's answers arrive in polls.)
    for (let i = 0; i < 20; i++) await Promise.resolve();
    expect(hub.subscriptionCount).toBe(
      before + queries - UNSUBSCRIBE_PER_SLICE,
    );
    await expect
      .poll(() => hub.subscriptionCount, { timeout: 10_000 })
      .toBe(before);
    // A commit to what they read meanwhile runs nothing for the closed socket.
    const sent = closing.sent.length;
    await insertItems(group, 1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(closing.sent.length).toBe(sent);
  });

  test("a pass whose snapshot expires moves to a newer one, keeping the results still valid, and releases every snapshot it pinned", async () => {
    const group = `expiring-${crypto.randomUUID()}`;
    const elsewhere = `elsewhere-${crypto.randomUUID()}`;
    for (let rank = 0; rank < 5; rank++)
      await runner.runMutation({
        path: "items:insert",
        args: { group, rank, value: rank },
      });
    // 40 queries of 2 ms: a long update, which runs at a snapshot; each
    // snapshot expires after 10 runs, so a pass needs several.
    slowGroups.set(group, 2);
    expireAfterRuns = 10;
    const pinnedBefore = snapshotsPinned;
    const releasedBefore = snapshotsReleased;
    const runsBefore = queryRuns.get("items:range") ?? 0;
    const client = new FakeClient();
    client.addMany(distinctRanges(group, 40));
    // Commits land meanwhile, elsewhere: every snapshot is soon not the
    // latest state, yet what the pass ran stays valid.
    let writes = 0;
    while (writes < 2_000 && client.transitions().length === 0)
      await runner.runMutation({
        path: "items:insert",
        args: { group: elsewhere, rank: writes++ },
      });
    expireAfterRuns = null;
    slowGroups.delete(group);
    expect(client.transitions()).toHaveLength(1);
    // At least one new pin (the first ~20 ms of runs happen before any).
    expect(snapshotsPinned - pinnedBefore).toBeGreaterThanOrEqual(2);
    // 40 results, each run once: the ones kept across a new pin ran no more.
    expect(client.transitions()[0].modifications).toHaveLength(40);
    expect((queryRuns.get("items:range") ?? 0) - runsBefore).toBe(40);
    await expectUpToDate([client], "after the pass");
    client.session.dispose();
    expect(snapshotsReleased - releasedBefore).toBe(
      snapshotsPinned - pinnedBefore,
    );
  });

  test("a result of tens of kilobytes reaches the client exactly as a fresh run returns it", async () => {
    const group = `large-${crypto.randomUUID()}`;
    for (let rank = 0; rank < 4; rank++)
      await runner.runMutation({
        path: "items:insert",
        args: { group, rank, value: `é${rank}`.repeat(4_000) },
      });
    const client = new FakeClient();
    const queryId = client.add("items:range", { group });
    // Sent from the text the isolate wrote (values/serialized.ts), not
    // serialized again: the client must decode the same value.
    await expectUpToDate([client], "a large result");
    const state = client.state.get(queryId) as { value: unknown[] };
    expect(JSON.stringify(state.value).length).toBeGreaterThan(16 * 1024);
    client.session.dispose();
  });

  test("identical sockets are sent one shared frame per commit, never another identity's, and each socket's versions stay contiguous", async () => {
    const group = `frames-${crypto.randomUUID()}`;
    const alice = Array.from({ length: 5 }, () => new FakeClient());
    const bob = Array.from({ length: 5 }, () => new FakeClient());
    for (const client of alice) client.actAs("alice");
    for (const client of bob) client.actAs("bob");
    const everyone = [...alice, ...bob];
    for (const client of everyone) client.add("items:range", { group });
    await expectUpToDate(everyone, "first results");
    const lastFrame = (client: FakeClient) => client.frames.at(-1);
    for (let rank = 0; rank < 5; rank++) {
      const seen = everyone.map((client) => client.transitions().length);
      await runner.runMutation({
        path: "items:insert",
        args: { group, rank },
      });
      await expect
        .poll(() =>
          everyone.every((client, i) => client.transitions().length > seen[i]),
        )
        .toBe(true);
      expect(new Set(alice.map(lastFrame)).size).toBe(1);
      expect(new Set(bob.map(lastFrame)).size).toBe(1);
      expect(lastFrame(alice[0])).not.toBe(lastFrame(bob[0]));
    }
    await expectUpToDate(everyone, "after the inserts");
    for (const client of everyone) {
      const transitions = client.transitions();
      for (let i = 1; i < transitions.length; i++)
        expect(transitions[i].startVersion).toEqual(
          transitions[i - 1].endVersion,
        );
      client.session.dispose();
    }
  });

  test("a large room's Transitions go out in slices that let the event loop run in between", async () => {
    const group = `room-${crypto.randomUUID()}`;
    for (let rank = 0; rank < 40; rank++) {
      await runner.runMutation({
        path: "items:insert",
        args: { group, rank, value: "x".repeat(100) },
      });
    }
    const room = Array.from({ length: 2_000 }, () => new FakeClient());
    for (const client of room) client.add("items:range", { group });
    await expect
      .poll(() => room.every((c) => c.state.size === 1), { timeout: 30_000 })
      .toBe(true);
    const delivered = () =>
      room.filter(
        (c) => (c.state.get(0) as { value: unknown[] }).value.length === 41,
      ).length;
    let deliveredWhenTheLoopRan = -1;
    await runner.runMutation({
      path: "items:insert",
      args: { group, rank: 40 },
    });
    // A macrotask queued right after the commit runs between two slices.
    setImmediate(() => {
      setImmediate(() => (deliveredWhenTheLoopRan = delivered()));
    });
    await expect.poll(delivered, { timeout: 30_000 }).toBe(room.length);
    expect(deliveredWhenTheLoopRan).toBeGreaterThan(0);
    expect(deliveredWhenTheLoopRan).toBeLessThan(room.length);
    for (const client of room) client.session.dispose();
  });

  test("frames that became durable go out before a room's remaining updates", async () => {
    const group = `release-${crypto.randomUUID()}`;
    const room = Array.from({ length: 3_000 }, () => new FakeClient());
    for (const client of room) client.add("items:range", { group });
    await expect
      .poll(() => room.every((c) => c.state.size === 1), { timeout: 30_000 })
      .toBe(true);
    const order: number[] = [];
    // The order the room's updates ran in after the commit (a socket's
    // frames may be handled a few turns apart, so it need not be the room's).
    const updated: number[] = [];
    const seen = new Set<number>();
    room.forEach((client, i) => {
      client.onTransition = () => order.push(i);
      const session = client.session;
      const update = session.update.bind(session);
      session.update = (slot) => {
        if (!seen.has(i)) updated.push(i);
        seen.add(i);
        return update(slot);
      };
    });
    // The commit's fsync waits until the first updates have built their
    // Transitions (queued in their outboxes); the room's other updates are
    // still to run when it ends, and send theirs at once.
    let openGate = () => undefined as void;
    fsyncGate = new Promise<void>((resolve) => (openGate = resolve));
    const inserted = runner.runMutation({
      path: "items:insert",
      args: { group, rank: 0 },
    });
    // Checked between two slices: the first slice's updates are waiting.
    while (hub.waitingForDurable === 0)
      await new Promise((resolve) => setImmediate(resolve));
    expect(hub.waitingForDurable).toBeLessThan(room.length);
    fsyncGate = null;
    openGate();
    await inserted;
    await expect
      .poll(() => order.length, { timeout: 30_000 })
      .toBe(room.length);
    // The first updates' frames were the ones waiting for the fsync: they
    // go out first, not after the room's. (The first update ran the room's
    // query, and on a loaded machine that run can make its socket's updates
    // heavy, queued behind the light ones: the second is compared.)
    expect(updated).toHaveLength(room.length);
    expect(order.indexOf(updated[1])).toBeLessThan(
      order.indexOf(updated[room.length - 1]),
    );
    for (const client of room) client.session.dispose();
  });

  test("once the fsync a room's frames wait for has returned, the slice ends: they go out before the next update, not after the rest of the slice's", async () => {
    const group = `landed-${crypto.randomUUID()}`;
    await insertItems(group, 1);
    // One shared query: after its run, each socket's update is a few
    // microseconds of synchronous work, so a slice holds hundreds of them.
    const room = Array.from({ length: 3_000 }, () => new FakeClient());
    for (const client of room) client.add("items:range", { group });
    await expectUpToDate(room, "first results");
    const sender = new FakeClient();
    // Each commit's fsync starts with the room's query run, so that it
    // returns while the room's updates run (before them, every frame would
    // go out at once either way).
    let startFsync = () => undefined as void;
    const runQuery = runner.runQuery.bind(runner);
    runner.runQuery = (request, visibility, onValid) => {
      startFsync();
      return runQuery(request, visibility, onValid);
    };
    let updates = 0;
    let landedAt: number | null = null;
    let firstFrameAt: number | null = null;
    for (const client of room) {
      const session = client.session;
      const update = session.update.bind(session);
      // Counts the room's updates, and notes the one during which the
      // fsync returned on the writer thread (its answer not yet taken).
      session.update = (slot) => {
        updates++;
        const done = update(slot);
        if (landedAt === null && db.syncLanded) landedAt = updates;
        return done;
      };
      client.onTransition = () => (firstFrameAt ??= updates);
    }
    const seen: { landedAt: number; firstFrameAt: number }[] = [];
    try {
      // An fsync may also return between two slices (a slow disk), where
      // the event loop takes its answer at once: tried until one returns
      // inside a slice, at most five commits.
      for (let attempt = 0; attempt < 5 && seen.length === 0; attempt++) {
        updates = 0;
        landedAt = null;
        firstFrameAt = null;
        fsyncGate = new Promise<void>((resolve) => (startFsync = resolve));
        // The sender's answer waits for the fsync too, from the commit on.
        sender.mutate(attempt, "items:insert", { group, rank: 1 + attempt });
        await expect
          .poll(
            () =>
              sender.sent.filter((m) => m.type === "MutationResponse")
                .length ===
              attempt + 1,
            { timeout: 30_000 },
          )
          .toBe(true);
        await expectUpToDate(room, `after insert ${attempt}`);
        if (landedAt !== null && landedAt < room.length)
          seen.push({ landedAt, firstFrameAt: firstFrameAt! });
      }
    } finally {
      runner.runQuery = runQuery;
      fsyncGate = null;
      startFsync();
    }
    expect(seen).toHaveLength(1);
    // At most the update that saw it (and one per other lane) ran before
    // the frames went out; without the check, the rest of the slice's did
    // (hundreds).
    expect(seen[0].firstFrameAt - seen[0].landedAt).toBeLessThanOrEqual(4);
    for (const client of [...room, sender]) client.session.dispose();
  });

  test("a client that stops reading is sent at most two Transitions, then the latest state once it reads again", async () => {
    const group = `slow-${crypto.randomUUID()}`;
    const slow = new FakeClient();
    const queryId = slow.add("items:range", { group });
    await expectUpToDate([slow], "first result");
    slow.reading = false;
    const before = slow.transitions().length;
    for (let rank = 0; rank < 20; rank++) {
      await runner.runMutation({
        path: "items:insert",
        args: { group, rank },
      });
      await new Promise((resolve) => setImmediate(resolve));
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(slow.transitions().length - before).toBeLessThanOrEqual(2);
    slow.flush();
    await expectUpToDate([slow], "after reading again");
    expect(slow.state.get(queryId)).toMatchObject({ ok: true });
    expect(
      (slow.state.get(queryId) as { value: unknown[] }).value,
    ).toHaveLength(20);
    slow.session.dispose();
  });
});
