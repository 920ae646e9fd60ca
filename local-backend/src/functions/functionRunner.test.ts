/**
 * Queries run concurrently with commits: a run that a commit overlapped is
 * discarded and repeated, so every answer is the answer at its timestamp; a
 * run that no commit touched is kept; and what a query reads across a pause
 * always comes from one snapshot. The fixture's queries pause on Web Crypto
 * (the thread pool), so a mutation started meanwhile commits mid-run.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { JSONValue } from "convex/values";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { TurnCounter } from "../../test/turnCounter.ts";
import { Database } from "../storage/database.ts";
import { FunctionRunner } from "./functionRunner.ts";
import { createIsolate, type Isolate } from "./isolate.ts";
import { buildFunctions } from "./loader.ts";
import {
  type ConvexGlobal,
  createSyscalls,
  currentRequest,
} from "./syscalls.ts";

const FIXTURE = path.resolve(import.meta.dirname, "../../test/fixture/convex");

let dir: string;
let db: Database;
let runner: FunctionRunner;
let isolate: Isolate;
/** Queries' `queryStream` syscalls so far: each run of the fixture's queries opens one per counter read. */
let streams = 0;
/** A test's count of event-loop turns, and how many turns each `queryPage` call lasted. */
let turns: TurnCounter | null = null;
const pageCallTurns: number[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "function-runner-test-"));
  db = Database.open(dir);
  runner = new FunctionRunner(db);
  const syscalls = createSyscalls({ db, nested: runner.nested });
  const counted: ConvexGlobal = {
    ...syscalls,
    syscall(op, args) {
      if (op === "1.0/queryStream" && currentRequest()?.udfType === "query")
        streams++;
      return syscalls.syscall(op, args);
    },
    asyncSyscallNow(op, args) {
      const result = syscalls.asyncSyscallNow!(op, args);
      if (op === "1.0/queryPage") {
        const start = turns?.count ?? 0;
        void Promise.resolve(result).then(() =>
          pageCallTurns.push((turns?.count ?? 0) - start),
        );
      }
      return result;
    },
  };
  isolate = createIsolate(await buildFunctions(FIXTURE), {
    convex: counted,
    env: {},
    onStrayLog: () => undefined,
  });
  db.setSchema(isolate.schema);
  runner.setIsolate(isolate);
});
afterAll(() => {
  runner.close();
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function increment(name: string): Promise<{ value: number; ts: bigint }> {
  const outcome = await runner.runMutation({
    path: "counters:increment",
    args: { name },
  });
  if (outcome.status !== "success") throw new Error(outcome.errorMessage);
  return { value: outcome.value as number, ts: outcome.ts! };
}

describe("concurrent queries", () => {
  test("a query that a commit overlaps mid-run is run again and answers with the committed value", async () => {
    const name = `overlap-${crypto.randomUUID()}`;
    await increment(name);
    const before = streams;
    // The query reads 1 and pauses; the mutation commits 2 meanwhile.
    const query = runner.runQuery({
      path: "concurrency:getAfterPause",
      args: { name, pauses: 2 },
    });
    const mutation = increment(name);
    const [outcome, committed] = await Promise.all([query, mutation]);
    expect(committed.value).toBe(2);
    expect(outcome).toMatchObject({ status: "success", value: 2 });
    expect(outcome.ts >= committed.ts).toBe(true);
    // Only the kept run's log lines are reported.
    expect(outcome.logLines).toEqual(["[LOG] 'read 2'"]);
    expect(streams - before).toBe(2);
  });

  test("a page of thousands of rows is read over several turns of the event loop, and a commit meanwhile is in it exactly when it is at or before the answer's timestamp", async () => {
    const fill = await runner.runMutation({
      path: "limits:fill",
      args: { author: "page", count: 3_000, size: 20 },
    });
    expect(fill.status).toBe("success");
    turns = new TurnCounter();
    pageCallTurns.length = 0;
    const query = runner.runQuery({
      path: "messages:page",
      args: { paginationOpts: { numItems: 1e9, cursor: null } },
    });
    // Commits while the page is being read: a run that read past it is not
    // kept; the answer is the page at one timestamp (a later run's, or a
    // snapshot's pinned before or after this commit).
    await new Promise((resolve) => setImmediate(resolve));
    const sent = await runner.runMutation({
      path: "messages:send",
      args: { author: "page", body: "mid-page" },
    });
    const outcome = await query;
    turns.stop();
    if (outcome.status !== "success" || sent.status !== "success")
      throw new Error("the page or the send failed");
    const page = (outcome.value as { page: { _id: string }[] }).page;
    const ids = page.map((m) => m._id);
    expect(ids.includes(sent.value as string)).toBe(sent.ts! <= outcome.ts);
    expect(page.length).toBe(
      ids.includes(sent.value as string) ? 3_001 : 3_000,
    );
    const again = await runner.runQuery({
      path: "messages:page",
      args: { paginationOpts: { numItems: 1e9, cursor: null } },
    });
    if (again.status !== "success") throw new Error(again.errorMessage);
    const latest = (again.value as { page: { _id: string }[] }).page;
    expect(latest.map((m) => m._id)).toEqual(
      ids.includes(sent.value as string) ? ids : [sent.value, ...ids],
    );
    // One `queryPage` call, yet the event loop turned while it read.
    expect(Math.max(...pageCallTurns)).toBeGreaterThanOrEqual(2);
  });

  test("a query whose reads a concurrent commit does not touch runs once", async () => {
    const name = `untouched-${crypto.randomUUID()}`;
    const other = `other-${crypto.randomUUID()}`;
    await increment(name);
    const before = streams;
    // Three turns of the event loop: the mutation, queued for the next check
    // phase, commits inside them wherever this turn is.
    const query = runner.runQuery({
      path: "concurrency:getAfterPause",
      args: { name, pauses: 3 },
    });
    const mutation = increment(other);
    const [outcome, committed] = await Promise.all([query, mutation]);
    expect(outcome).toMatchObject({ status: "success", value: 1 });
    // Valid at the later commit's timestamp too: it did not touch the read.
    expect(outcome.ts >= committed.ts).toBe(true);
    expect(streams - before).toBe(1);
  });

  test("two reads across a pause come from one snapshot while transfers commit", async () => {
    const a = `a-${crypto.randomUUID()}`;
    const b = `b-${crypto.randomUUID()}`;
    const transfer = (from: string, to: string) =>
      runner.runMutation({
        path: "concurrency:transfer",
        args: { from, to, amount: 1 },
      });
    await transfer(a, b);
    const results = await Promise.all([
      runner.runQuery({
        path: "concurrency:pairAfterPause",
        args: { first: a, second: b },
      }),
      transfer(a, b),
      runner.runQuery({
        path: "concurrency:pairAfterPause",
        args: { first: b, second: a },
      }),
      transfer(b, a),
      transfer(a, b),
    ]);
    for (const outcome of [results[0], results[2]]) {
      expect(outcome.status).toBe("success");
      const [x, y] = (outcome as { value: number[] }).value;
      expect(x + y).toBe(0);
    }
  });

  test("under a stream of conflicting commits a query still answers, with the value at its timestamp, and holds no commit", async () => {
    const name = `stream-${crypto.randomUUID()}`;
    const commits = [await increment(name)];
    let done = false;
    // Each snapshot pinned meanwhile: the commits it showed, and the count at its release.
    const pinned: { at: number; releasedAt: number | null }[] = [];
    const snapshot = db.snapshot.bind(db);
    db.snapshot = () => {
      const got = snapshot();
      if (got === null) return null;
      const record = { at: got.commit, releasedAt: null as number | null };
      pinned.push(record);
      const release = got.release.bind(got);
      got.release = () => {
        record.releasedAt ??= db.commitCount;
        release();
      };
      return got;
    };
    // Pauses that span several turns of the event loop, so commits land
    // during each of its runs.
    const query = runner
      .runQuery({
        path: "concurrency:getAfterPause",
        args: { name, pauses: 4 },
      })
      .finally(() => (done = true));
    // Committed, not waiting for their fsyncs: one commit every turn or so.
    for (let i = 0; i < 2_000 && !done; i++) {
      const commit = await runner.executeMutation({
        path: "counters:increment",
        args: { name },
      });
      if (commit.status !== "success") throw new Error(commit.errorMessage);
      commits.push({ value: commit.value as number, ts: commit.ts! });
      await new Promise((resolve) => setImmediate(resolve));
    }
    const outcome = await query;
    db.snapshot = snapshot;
    expect(outcome.status).toBe("success");
    const atTs = commits.filter((c) => c.ts <= outcome.ts).length;
    expect((outcome as { value: number }).value).toBe(atTs);
    // Its last run read a snapshot while the writer went on (with commits
    // held off for it instead, none would land during that run).
    expect(pinned).toHaveLength(1);
    expect(pinned[0].releasedAt).toBeGreaterThan(pinned[0].at);
  });
});

describe("mutations that arrive together", () => {
  test(
    "each see the commits before them, and a runaway among them fails alone",
    { timeout: 30_000 },
    async () => {
      const name = `burst-${crypto.randomUUID()}`;
      const spun = `spun-${crypto.randomUUID()}`;
      const call = (path: string, args: Record<string, JSONValue>) =>
        runner.executeMutation({ path, args });
      // Issued in one tick: one writer slot takes them all, in this order.
      const calls = [
        ...Array.from({ length: 10 }, () =>
          call("counters:increment", { name }),
        ),
        call("runaway:writeThenSpin", { name: spun, async: false }),
        call("concurrency:incrementAfterPause", { name }),
        ...Array.from({ length: 10 }, () =>
          call("counters:increment", { name }),
        ),
      ];
      const outcomes = await Promise.all(calls);
      const values = outcomes.map((outcome) =>
        outcome.status === "success" ? outcome.value : outcome.errorMessage,
      );
      expect(values[10]).toContain(
        "Function execution timed out (maximum duration: 1s)",
      );
      // Every increment counts once, whichever left the slot (the one that
      // pauses does, and the runaway is moved off the main thread).
      const counted = values.filter((_, i) => i !== 10) as number[];
      expect(counted.sort((x, y) => x - y)).toEqual(
        Array.from({ length: 21 }, (_, i) => i + 1),
      );
      const left = await runner.runQuery({
        path: "counters:get",
        args: { name: spun },
      });
      expect(left.status === "success" && left.value).toBeNull();
    },
  );
});

describe("a mutation that leaves its writer slot", () => {
  const run = (path: string, name: string, extra: { pauses?: number } = {}) =>
    runner
      .executeMutation({ path, args: { name, ...extra } })
      .then((outcome) => {
        if (outcome.status !== "success") throw new Error(outcome.errorMessage);
        return { value: outcome.value as number, ts: outcome.ts! };
      });

  test("holds no other mutation, and runs again when a commit meanwhile wrote what it read", async () => {
    const name = `across-${crypto.randomUUID()}`;
    const order: string[] = [];
    // Reads 0 and pauses for three turns of the event loop; the increment
    // issued after it, queued for the next check phase, commits 1 meanwhile.
    const across = run("concurrency:incrementAcrossPause", name, {
      pauses: 3,
    }).finally(() => order.push("across"));
    const plain = run("counters:increment", name).finally(() =>
      order.push("plain"),
    );
    const [a, p] = await Promise.all([across, plain]);
    expect(order).toEqual(["plain", "across"]);
    expect(p.value).toBe(1);
    // Not 1 (a lost update): the overlapped run was discarded and repeated.
    expect(a.value).toBe(2);
    expect(a.ts > p.ts).toBe(true);
    expect(await getValue(name)).toBe(2);
  });

  test("under a stream of conflicting commits still commits once, serializably", async () => {
    const name = `contended-${crypto.randomUUID()}`;
    const commits = [await increment(name)];
    let done = false;
    const across = run("concurrency:incrementAcrossPause", name).finally(
      () => (done = true),
    );
    for (let i = 0; i < 200 && !done; i++) {
      commits.push(await increment(name));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const outcome = await across;
    // Its value is one more than the increments committed before it.
    const before = commits.filter((c) => c.ts < outcome.ts).length;
    expect(outcome.value).toBe(before + 1);
    expect(await getValue(name)).toBe(commits.length + 1);
  });

  test("interleaved with plain increments: every increment counts exactly once", async () => {
    const name = `mixed-${crypto.randomUUID()}`;
    const calls = Array.from({ length: 24 }, (_, i) =>
      run(
        i % 3 === 0 ? "concurrency:incrementAcrossPause" : "counters:increment",
        name,
      ),
    );
    const values = (await Promise.all(calls)).map((c) => c.value);
    expect([...values].sort((x, y) => x - y)).toEqual(
      Array.from({ length: 24 }, (_, i) => i + 1),
    );
    expect(await getValue(name)).toBe(24);
  });

  test("a copy of the same request that committed first wins: its writes commit once", async () => {
    const name = `resent-${crypto.randomUUID()}`;
    const dedupe = { sessionId: crypto.randomUUID(), requestId: 7 };
    // A blind insert after a pause: no commit can overlap it, so only the
    // exactly-once check at its commit keeps the second copy out.
    const copies = await Promise.all(
      [0, 1].map(() =>
        runner.executeMutation({
          path: "concurrency:insertAfterPause",
          args: { name },
          dedupe,
        }),
      ),
    );
    expect(copies.map((c) => c.status)).toEqual(["success", "success"]);
    expect(copies[0].ts).toBe(copies[1].ts);
    const count = await runner.runQuery({
      path: "concurrency:countNamed",
      args: { name },
    });
    expect(count).toMatchObject({ status: "success", value: 1 });
  });
});

describe("a shared window whose watchdog cuts host code", () => {
  test(
    "every mutation is answered and counted exactly once",
    { timeout: 60_000 },
    async () => {
      // A 1 ms window: the watchdog lands between runs, in argument checks and
      // in runs themselves, over and over (commits then wait for the window to
      // close, as they do when too little of it is left).
      const cutRunner = new FunctionRunner(db, { sharedWindowMs: 1 });
      cutRunner.setIsolate(isolate);
      try {
        const name = `cut-${crypto.randomUUID()}`;
        const calls = Array.from({ length: 200 }, (_, i) =>
          cutRunner.executeMutation({
            path: "counters:increment",
            args: { name },
            dedupe: { sessionId: name, requestId: i },
          }),
        );
        const outcomes = await Promise.all(calls);
        const values = outcomes.map((outcome) =>
          outcome.status === "success" ? outcome.value : outcome.errorMessage,
        );
        expect([...(values as number[])].sort((x, y) => x - y)).toEqual(
          Array.from({ length: 200 }, (_, i) => i + 1),
        );
        expect(await getValue(name)).toBe(200);
      } finally {
        cutRunner.close();
      }
    },
  );
});

describe("a shared window cut after a mutation's first window", () => {
  test(
    "mutations that await Web Crypto are all answered, each commits once, and every context is free after",
    { timeout: 120_000 },
    async () => {
      // Each mutation pauses on Web Crypto, so its first window ends with it
      // still going; a 1 ms shared window is often cut right after, in the
      // host code that would schedule its next look. Before, such a run held
      // its context for good (the runner started the call again), and after
      // eight of them every call waited for a context forever.
      const cutRunner = new FunctionRunner(db, { sharedWindowMs: 1 });
      cutRunner.setIsolate(isolate);
      try {
        const name = `cut-pause-${crypto.randomUUID()}`;
        for (let round = 0; round < 10; round++) {
          const outcomes = await Promise.all(
            Array.from({ length: 40 }, (_, i) =>
              cutRunner.executeMutation({
                path: "concurrency:incrementAfterPause",
                args: { name },
                dedupe: { sessionId: name, requestId: round * 40 + i },
              }),
            ),
          );
          expect(outcomes.filter((o) => o.status !== "success")).toEqual([]);
        }
        expect(await getValue(name)).toBe(400);
        // Every run ended, so none holds a context.
        expect(isolate.udf.contextsHeld).toBe(0);
      } finally {
        cutRunner.close();
      }
    },
  );
});

async function getValue(name: string): Promise<JSONValue> {
  const outcome = await runner.runQuery({
    path: "counters:get",
    args: { name },
  });
  if (outcome.status !== "success") throw new Error(outcome.errorMessage);
  return outcome.value;
}
