/**
 * The group writer's thread dying (a crash, an out-of-memory kill of the
 * thread): commits fail, and closing the store does not wait for answers
 * the thread can no longer give. And answers lost on the main thread: a
 * function's watchdog that ends host code just after a blocking wait took
 * an answer (`receiveMessageOnPort`) and before it was noted loses it.
 * A file of its own: it records the threads the store starts and drops
 * answers on demand (`vi.mock` applies to the whole file).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Worker as WorkerType } from "node:worker_threads";
import { afterEach, expect, test, vi } from "vitest";
import { FIRST_USER_TABLE_NUMBER } from "../values/ids.ts";

const started: { url: string; worker: WorkerType }[] = [];
/** Answers of the group writer taken synchronously and then lost, while it returns true. */
let loses: (answer: { seq: number; error?: string }) => boolean = () => false;
vi.mock("node:worker_threads", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:worker_threads")>();
  class Recorded extends real.Worker {
    constructor(
      url: string | URL,
      options?: ConstructorParameters<typeof real.Worker>[1],
    ) {
      super(url, options);
      started.push({ url: String(url), worker: this });
    }
  }
  const receiveMessageOnPort: typeof real.receiveMessageOnPort = (port) => {
    for (;;) {
      const taken = real.receiveMessageOnPort(port);
      const answer = taken?.message as { seq?: unknown } | undefined;
      if (typeof answer?.seq !== "number" || !loses(answer as { seq: number }))
        return taken;
    }
  };
  const mocked = { ...real, Worker: Recorded, receiveMessageOnPort };
  return { ...mocked, default: mocked };
});

const dirs: string[] = [];
afterEach(() => {
  loses = () => false;
  for (const dir of dirs.splice(0))
    fs.rmSync(dir, { recursive: true, force: true });
});

test("once the writer thread has died, commits fail and closing does not wait out the deadline for its answers", async () => {
  const { SqliteStore, CommitGroupLostError } =
    await import("./sqliteStore.ts");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "group-writer-exit-"));
  dirs.push(dir);
  const file = path.join(dir, "db.sqlite3");
  const store = SqliteStore.open(file);
  const writer = started.find(({ url }) => url.includes("groupWriterWorker"));
  expect(writer).toBeDefined();
  await writer!.worker.terminate();
  // The thread's exit reaches the store's writer as an event.
  await new Promise((resolve) => setImmediate(resolve));
  expect(() =>
    store.commit({
      ts: 1n,
      lastCreationTime: 1,
      newTables: [],
      newIndexes: [],
      writes: [{ id: "a", tableNumber: FIRST_USER_TABLE_NUMBER, json: '"a"' }],
      indexWrites: [],
      counts: new Map(),
    }),
  ).toThrow(CommitGroupLostError);
  const before = performance.now();
  store.close();
  // Not a speed check: a close that waited for the dead thread blocked for
  // the whole WAIT_MAX_MS (30 s) before giving up.
  expect(performance.now() - before).toBeLessThan(10_000);
  // The file and its lock are free again.
  SqliteStore.open(file).close();
});

function tempFile(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "group-writer-lost-"));
  dirs.push(dir);
  return path.join(dir, "db.sqlite3");
}

function batch(ts: bigint, id: string, extra: object = {}) {
  return {
    ts,
    lastCreationTime: Number(ts),
    newTables: [],
    newIndexes: [],
    writes: [{ id, tableNumber: FIRST_USER_TABLE_NUMBER, json: `"${ts}"` }],
    indexWrites: [],
    counts: new Map(),
    ...extra,
  };
}

test("a blocking wait whose answers are lost still ends once the thread has written the groups, and reads see the newest write", async () => {
  const { SqliteStore } = await import("./sqliteStore.ts");
  const file = tempFile();
  const store = SqliteStore.open(file);
  for (let round = 0; round < 20; round++) {
    for (let group = 1; group <= 10; group++) {
      store.commit(batch(BigInt(round * 10 + group), "x"));
      store.snapshot()?.release();
    }
    loses = () => true;
    // Before: it waited out WAIT_MAX_MS (30 s) for the lost answers and
    // failed the store ("the group writer thread did not answer").
    store.setMeta("mark", String(round));
    loses = () => false;
    expect(store.getDocument("x")).toBe(`"${round * 10 + 10}"`);
    await store.sync();
  }
  store.close();
  const reopened = SqliteStore.open(file);
  expect(reopened.getDocument("x")).toBe('"200"');
  reopened.close();
});

test("a group that failed fails the store when its answer, the one with the error, is lost", async () => {
  const { SqliteStore, CommitGroupLostError } =
    await import("./sqliteStore.ts");
  const file = tempFile();
  const store = SqliteStore.open(file);
  const table = { name: "t", number: FIRST_USER_TABLE_NUMBER, count: 0 };
  store.commit(batch(1n, "a", { newTables: [table] }));
  // The same table registered twice: the group's second INSERT violates
  // `tables.name`'s uniqueness, which the database never lets happen.
  store.commit(batch(2n, "b", { newTables: [table] }));
  const lost: string[] = [];
  loses = (answer) => {
    if (answer.error === undefined) return false;
    lost.push(answer.error);
    return true;
  };
  // The thread's FAILED slot tells what the lost answer said, not its text.
  expect(() => store.setMeta("mark", "m")).toThrow(CommitGroupLostError);
  expect(lost).toHaveLength(1);
  expect(lost[0]).toMatch(/UNIQUE/);
  loses = () => false;
  expect(() => store.commit(batch(3n, "c"))).toThrow(CommitGroupLostError);
  await expect(store.sync()).rejects.toThrow();
  store.close();
  const reopened = SqliteStore.open(file);
  expect(["a", "b", "c"].map((id) => reopened.getDocument(id))).toEqual([
    null,
    null,
    null,
  ]);
  reopened.close();
});
