/**
 * The group writer's thread dying (a crash, an out-of-memory kill of the
 * thread): commits fail, and closing the store does not wait for answers
 * the thread can no longer give. A file of its own: it records the threads
 * the store starts (`vi.mock` applies to the whole file).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Worker as WorkerType } from "node:worker_threads";
import { afterEach, expect, test, vi } from "vitest";
import { FIRST_USER_TABLE_NUMBER } from "../values/ids.ts";

const started: { url: string; worker: WorkerType }[] = [];
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
  return { ...real, default: { ...real, Worker: Recorded }, Worker: Recorded };
});

const dirs: string[] = [];
afterEach(() => {
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
