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
import { Database } from "../storage/database.ts";
import { FunctionRunner } from "./functionRunner.ts";
import { createIsolate } from "./isolate.ts";
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
/** Queries' `queryStream` syscalls so far: each run of the fixture's queries opens one per counter read. */
let streams = 0;

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
  };
  const isolate = createIsolate(await buildFunctions(FIXTURE), {
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

  test("a query whose reads a concurrent commit does not touch runs once", async () => {
    const name = `untouched-${crypto.randomUUID()}`;
    const other = `other-${crypto.randomUUID()}`;
    await increment(name);
    const before = streams;
    const query = runner.runQuery({
      path: "concurrency:getAfterPause",
      args: { name },
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

  test("under a stream of conflicting commits a query still answers, with the value at its timestamp", async () => {
    const name = `stream-${crypto.randomUUID()}`;
    const commits = [await increment(name)];
    let done = false;
    const query = runner
      .runQuery({ path: "concurrency:getAfterPause", args: { name } })
      .finally(() => (done = true));
    for (let i = 0; i < 200 && !done; i++) {
      commits.push(await increment(name));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const outcome = await query;
    expect(outcome.status).toBe("success");
    const atTs = commits.filter((c) => c.ts <= outcome.ts).length;
    expect((outcome as { value: number }).value).toBe(atTs);
  });
});

describe("mutations that arrive together", () => {
  test(
    "run one after another, each seeing the commits before it, and a runaway among them fails alone",
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
      expect(values.slice(0, 10)).toEqual(
        Array.from({ length: 10 }, (_, i) => i + 1),
      );
      expect(values[10]).toContain(
        "Function execution timed out (maximum duration: 1s)",
      );
      expect(values.slice(11)).toEqual(
        Array.from({ length: 11 }, (_, i) => i + 11),
      );
      const left = await runner.runQuery({
        path: "counters:get",
        args: { name: spun },
      });
      expect(left.status === "success" && left.value).toBeNull();
    },
  );
});
