import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { afterEach, describe, expect, test } from "vitest";
import { FIRST_USER_TABLE_NUMBER } from "../values/ids.ts";
import { type CommitBatch, SqliteStore } from "./sqliteStore.ts";

const dirs: string[] = [];
const open: SqliteStore[] = [];
afterEach(() => {
  for (const store of open.splice(0)) store.close();
  for (const dir of dirs.splice(0))
    fs.rmSync(dir, { recursive: true, force: true });
});

function tempFile(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wal-test-"));
  dirs.push(dir);
  return path.join(dir, "db.sqlite3");
}

function openStore(file: string, walCapBytes?: number): SqliteStore {
  const store = SqliteStore.open(file, { walCapBytes });
  open.push(store);
  return store;
}

function closeStore(store: SqliteStore): void {
  store.close();
  open.splice(open.indexOf(store), 1);
}

const BODY = "x".repeat(1000);
let nextTs = 1n;

/** A commit of one ~1 KB document with id `id`. */
function batch(id: string): CommitBatch {
  return {
    ts: nextTs++,
    lastCreationTime: 0,
    newTables: [],
    newIndexes: [],
    writes: [
      {
        id,
        tableNumber: FIRST_USER_TABLE_NUMBER,
        json: JSON.stringify(`${id} ${BODY}`),
      },
    ],
    indexWrites: [],
    counts: new Map(),
  };
}

/** Waits, at most 20 s, for the worker to have copied every committed frame. */
async function checkpointed(store: SqliteStore): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const stats = store.checkpointStats;
    if (stats.checkpoints > 0 && stats.backfilled === stats.walFrames) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(
    `never checkpointed: ${JSON.stringify(store.checkpointStats)}`,
  );
}

function documentCount(file: string): number {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    return (
      db.prepare("SELECT count(*) AS n FROM documents").get() as { n: number }
    ).n;
  } finally {
    db.close();
  }
}

describe("WAL checkpoints", () => {
  test("commits reach the database file while the store stays open", async () => {
    const file = tempFile();
    const store = openStore(file);
    for (let group = 0; group < 300; group++) {
      for (let i = 0; i < 10; i++) store.commit(batch(`d${group}-${i}`));
      await store.sync();
    }
    await checkpointed(store);
    // 3,000 documents of 1 KB: in the database file itself, not only in the WAL.
    expect(fs.statSync(file).size).toBeGreaterThan(3_000_000);
    expect(store.getDocument("d299-9")).toContain("d299-9");
  });

  test("groups that follow each other with no pause keep the WAL near its cap", async () => {
    const file = tempFile();
    const cap = 1 << 20;
    const store = openStore(file, cap);
    const syncs: Promise<void>[] = [];
    let largest = 0;
    // 8 MB of commits, a group's BEGIN right after the last one's COMMIT:
    // the worker never finds the WAL fully copied at a BEGIN.
    for (let group = 0; group < 800; group++) {
      for (let i = 0; i < 10; i++) store.commit(batch(`g${group}-${i}`));
      syncs.push(store.sync());
      largest = Math.max(largest, fs.statSync(`${file}-wal`).size);
    }
    await Promise.all(syncs);
    // Past the cap, each COMMIT checkpoints unless the worker's own
    // checkpoint holds the lock, so the WAL overshoots by what is committed
    // meanwhile; without the cap it reaches 64 MB here.
    expect(largest).toBeLessThan(8 * cap);
    closeStore(store);
    expect(documentCount(file)).toBe(8000);
  });

  test("backfill chunks written back to back, with no commit among them, keep the WAL near its cap", () => {
    const file = tempFile();
    const cap = 1 << 20;
    const store = openStore(file, cap);
    let largest = 0;
    for (let chunk = 0; chunk < 400; chunk++) {
      const entries = Array.from({ length: 20 }, (_, i) => ({
        key: Buffer.from(`${String(chunk * 20 + i).padStart(8, "0")} ${BODY}`),
        docId: `doc${chunk}-${i}`,
      }));
      store.insertEntries(1, entries, entries[19].key);
      largest = Math.max(largest, fs.statSync(`${file}-wal`).size);
    }
    expect(largest).toBeLessThan(8 * cap);
    closeStore(store);
    const db = new BetterSqlite3(file, { readonly: true });
    expect(db.prepare("SELECT count(*) AS n FROM index_entries").get()).toEqual(
      { n: 8000 },
    );
    db.close();
  });

  test("close leaves one consistent database file and releases the directory", async () => {
    const file = tempFile();
    const store = openStore(file);
    for (let group = 0; group < 50; group++) {
      for (let i = 0; i < 10; i++) store.commit(batch(`c${group}-${i}`));
      await store.sync();
    }
    store.commit(batch("last, not yet synced"));
    closeStore(store);
    // The store's connection closed last: it checkpointed and removed the WAL.
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    const db = new BetterSqlite3(file, { readonly: true });
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    db.close();
    expect(documentCount(file)).toBe(501);
    const reopened = openStore(file);
    expect(reopened.getDocument("last, not yet synced")).not.toBeNull();
  });
});
