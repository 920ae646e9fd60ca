/**
 * The on-disk storage: a folder written by the storage version 1 code is
 * migrated, a large database survives a restart exactly, index backfills
 * yield and stay in step with commits made meanwhile, and a write touches only
 * the indexes whose key it changes.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import BetterSqlite3 from "better-sqlite3";
import { convexToJson, type Value } from "convex/values";
import { afterEach, describe, expect, test } from "vitest";
import { Transaction, type SerializedQuery } from "../functions/transaction.ts";
import {
  encodeId,
  FIRST_USER_TABLE_NUMBER,
  newInternalId,
} from "../values/ids.ts";
import type { Doc } from "../values/wire.ts";
import {
  Database,
  indexWritesFor,
  type PendingWrite,
  type SchemaJson,
} from "./database.ts";

const dirs: string[] = [];
const open: Database[] = [];
afterEach(() => {
  for (const db of open.splice(0)) db.close();
  for (const dir of dirs.splice(0))
    fs.rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "storage-test-"));
  dirs.push(dir);
  return dir;
}

function openDb(dir: string, walCapBytes?: number): Database {
  const db = Database.open(dir, { walCapBytes });
  open.push(db);
  return db;
}

function closeDb(db: Database): void {
  db.close();
  open.splice(open.indexOf(db), 1);
}

const schema = (
  indexes: { indexDescriptor: string; fields: string[] }[],
): SchemaJson => ({
  tables: [{ tableName: "messages", indexes, documentType: { type: "any" } }],
  schemaValidation: false,
});
const BY_AUTHOR = [{ indexDescriptor: "by_author", fields: ["author"] }];

function byAuthor(author: Value): SerializedQuery {
  return {
    source: {
      type: "IndexRange",
      indexName: "messages.by_author",
      range: [{ type: "Eq", fieldPath: "author", value: convexToJson(author) }],
      order: "asc",
    },
    operators: [],
  };
}

const fullScan: SerializedQuery = {
  source: { type: "FullTableScan", tableName: "messages", order: "asc" },
  operators: [],
};

function read(db: Database, query: SerializedQuery): Doc[] {
  return [
    ...new Transaction(db, { readOnly: true, unmetered: true }).stream(query),
  ];
}

/** In commits of at most Convex's 16,000 writes (`TRANSACTION_MAX_NUM_USER_WRITES`). */
function insertMany(db: Database, rows: Record<string, Value>[]): string[] {
  const ids: string[] = [];
  for (let start = 0; start < rows.length; start += 16_000) {
    const tx = new Transaction(db, { readOnly: false });
    for (const row of rows.slice(start, start + 16_000))
      ids.push(tx.insert("messages", row));
    db.commit(tx.pendingWrites());
  }
  return ids;
}

/**
 * A data folder as storage version 1 wrote it (`SqliteStore` before indexes
 * moved to disk): tables, documents as Convex JSON, meta with version "1".
 */
function writeVersion1Folder(
  dir: string,
  docs: { doc: Doc; tableNumber: number }[],
): void {
  const db = new BetterSqlite3(path.join(dir, "db.sqlite3"));
  db.exec(`
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE tables (name TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE) WITHOUT ROWID;
    CREATE TABLE documents (id TEXT PRIMARY KEY, table_number INTEGER NOT NULL, ts INTEGER NOT NULL, json TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE session_requests (session_id TEXT NOT NULL, request_id INTEGER NOT NULL, ts INTEGER NOT NULL, outcome TEXT NOT NULL, PRIMARY KEY (session_id, request_id)) WITHOUT ROWID;
  `);
  db.prepare("INSERT INTO meta VALUES ('schema_version', '1')").run();
  db.prepare("INSERT INTO meta VALUES ('last_ts', ?)").run(
    String(BigInt(Date.now()) * 1_000_000n),
  );
  db.prepare("INSERT INTO tables VALUES ('messages', ?)").run(
    FIRST_USER_TABLE_NUMBER,
  );
  const insert = db.prepare("INSERT INTO documents VALUES (?, ?, 1, ?)");
  for (const { doc, tableNumber } of docs) {
    insert.run(doc._id, tableNumber, JSON.stringify(convexToJson(doc)));
  }
  db.close();
}

describe("migration from storage version 1", () => {
  test("a version 1 folder opens with every document, its indexes built and the version bumped", () => {
    const dir = tempDir();
    const now = Date.now();
    const docs: Doc[] = Array.from({ length: 50 }, (_, i) => ({
      _id: encodeId(FIRST_USER_TABLE_NUMBER, newInternalId()),
      _creationTime: now - 1000 + i,
      author: i % 2 === 0 ? "ann" : "bob",
      body: `m${i}`,
    }));
    const storageDoc: Doc = {
      _id: encodeId(2, newInternalId()),
      _creationTime: now - 2000,
      sha256: "x",
      size: 1,
    };
    writeVersion1Folder(dir, [
      ...docs.map((doc) => ({ doc, tableNumber: FIRST_USER_TABLE_NUMBER })),
      // System tables had no row in `tables` in version 1.
      { doc: storageDoc, tableNumber: 2 },
    ]);

    const db = openDb(dir);
    for (const doc of docs) expect(db.getDocument(doc._id)).toEqual(doc);
    expect(db.getDocument(storageDoc._id)).toEqual(storageDoc);
    expect(read(db, fullScan).map((d) => d._id)).toEqual(
      docs.map((d) => d._id),
    );
    db.setSchema(schema(BY_AUTHOR));
    expect(read(db, byAuthor("bob")).map((d) => d.body)).toEqual(
      docs.filter((d) => d.author === "bob").map((d) => d.body),
    );
    expect(db.table("messages")!.count).toBe(50);
    const [id] = insertMany(db, [{ author: "ann", body: "new" }]);
    expect(db.getDocument(id)!._creationTime).toBeGreaterThan(
      docs[49]._creationTime,
    );
    closeDb(db);

    const file = new BetterSqlite3(path.join(dir, "db.sqlite3"));
    expect(
      file.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get(),
    ).toEqual({ value: "2" });
    file.close();
    expect(read(openDb(dir), fullScan)).toHaveLength(51);
  });

  test("a folder from an unknown storage version is refused with one line saying what to do", () => {
    const dir = tempDir();
    const db = new BetterSqlite3(path.join(dir, "db.sqlite3"));
    db.exec(
      "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO meta VALUES ('schema_version', '99');",
    );
    db.close();
    expect(() => Database.open(dir)).toThrow(
      /^The data directory was written by an incompatible backend \(storage version 99, expected 2\); move it aside or pass a different --data directory$/,
    );
  });
});

describe("restart", () => {
  test(
    "100k documents keep every id, _creationTime and field across a restart",
    { timeout: 120_000 },
    () => {
      const dir = tempDir();
      const db = openDb(dir);
      db.setSchema(schema(BY_AUTHOR));
      // Big commits of ready-made writes: what is under test is the storage,
      // not the transaction layer above it.
      const table = db.tableForWrite("messages");
      const expected: Doc[] = [];
      for (let batch = 0; batch < 10; batch++) {
        const writes = new Map<string, PendingWrite>();
        for (let i = 0; i < 10_000; i++) {
          const n = batch * 10_000 + i;
          const doc: Doc = {
            _id: encodeId(table.number, newInternalId()),
            _creationTime: db.nextCreationTime(),
            author: `a${n % 7}`,
            body: `message ${n}`,
          };
          writes.set(doc._id, { table: "messages", doc, inserted: true });
          expected.push(doc);
        }
        db.commit(writes);
      }
      closeDb(db);

      const reopened = openDb(dir);
      reopened.setSchema(schema(BY_AUTHOR));
      expect(reopened.table("messages")!.count).toBe(100_000);
      const all = read(reopened, fullScan);
      expect(all.length).toBe(100_000);
      for (let i = 0; i < expected.length; i++) {
        const doc = all[i];
        if (
          doc._id !== expected[i]._id ||
          doc._creationTime !== expected[i]._creationTime ||
          doc.body !== expected[i].body ||
          doc.author !== expected[i].author
        ) {
          expect(doc).toEqual(expected[i]);
        }
      }
      expect(read(reopened, byAuthor("a3")).length).toBe(
        expected.filter((d) => d.author === "a3").length,
      );
    },
  );
});

describe("schema changes", () => {
  test("a new index is backfilled in slices that yield, and commits made meanwhile land in it", async () => {
    const dir = tempDir();
    const db = openDb(dir);
    db.setSchema(schema([]));
    const ids = insertMany(
      db,
      Array.from({ length: 20_000 }, (_, i) => ({
        author: `a${i % 10}`,
        body: `m${i}`,
      })),
    );
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 0);
    let committed = false;
    const concurrent = new Promise<void>((resolve) => {
      setImmediate(() => {
        // A commit between two slices: an insert, a move to another key and a delete.
        const tx = new Transaction(db, { readOnly: false });
        tx.insert("messages", { author: "a1", body: "during" });
        tx.patch(ids[0], { author: "a1" });
        tx.delete(ids[11]);
        db.commit(tx.pendingWrites());
        committed = true;
        resolve();
      });
    });
    await db.prepareSchema(schema(BY_AUTHOR));
    clearInterval(ticker);
    await concurrent;
    expect(committed).toBe(true);
    expect(ticks).toBeGreaterThan(0);
    db.setSchema(schema(BY_AUTHOR));
    const expected = read(db, fullScan)
      .filter((d) => d.author === "a1")
      .map((d) => d._id);
    expect(read(db, byAuthor("a1")).map((d) => d._id)).toEqual(expected);
    expect(expected).toContain(ids[0]);
    expect(expected).not.toContain(ids[11]);
  });

  test("a backfill leaves the WAL's copying to the checkpoint worker: no checkpoint on the event loop at the cap", async () => {
    // An 8 MiB cap: the backfill's index pages (1 to 3 MB a chunk) pass it
    // many times over.
    const db = openDb(tempDir(), 8 << 20);
    db.setSchema(schema([]));
    insertMany(
      db,
      Array.from({ length: 20_000 }, (_, i) => ({
        author: `author ${i % 997} ${"x".repeat(40)}`,
        body: `m${i}`,
      })),
    );
    const before = db.checkpointStats.capCheckpoints;
    await db.prepareSchema(schema(BY_AUTHOR));
    expect(db.checkpointStats.capCheckpoints - before).toBe(0);
    db.setSchema(schema(BY_AUTHOR));
    expect(read(db, byAuthor(`author 5 ${"x".repeat(40)}`))).toHaveLength(
      Math.ceil((20_000 - 5) / 997),
    );
  });

  test("a backfill that waits for the checkpoint worker finishes in a process with nothing else to do", () => {
    // In a script (no server keeping the event loop alive), the wait for the
    // worker must hold the loop itself, or Node exits mid-backfill (code 13).
    const module = (file: string) =>
      JSON.stringify(pathToFileURL(path.join(import.meta.dirname, file)).href);
    const script = `
      import { Database } from ${module("database.ts")};
      import { Transaction } from ${module("../functions/transaction.ts")};
      const db = Database.open(process.argv[1], { walCapBytes: 8 << 20 });
      db.setSchema(${JSON.stringify(schema([]))});
      for (let start = 0; start < 20000; start += 5000) {
        const tx = new Transaction(db, { readOnly: false });
        for (let i = start; i < start + 5000; i++)
          tx.insert("messages", { author: "author " + (i % 997) + " ${"x".repeat(40)}", body: "m" + i });
        db.commit(tx.pendingWrites());
      }
      await db.prepareSchema(${JSON.stringify(schema(BY_AUTHOR))});
      db.close();
      console.log("backfilled");
    `;
    const result = spawnSync(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script, tempDir()],
      { encoding: "utf8", timeout: 120_000 },
    );
    expect(result.stderr).toBe("");
    expect(result.stdout.trim()).toBe("backfilled");
    expect(result.status).toBe(0);
  });

  test("a backfill cut short by a restart resumes after its last chunk, and commits meanwhile land in it", async () => {
    const dir = tempDir();
    const first = openDb(dir);
    first.setSchema(schema([]));
    const ids = insertMany(
      first,
      Array.from({ length: 2_000 }, (_, i) => ({
        author: `a${i % 10}`,
        body: `m${i}`,
      })),
    );
    let before = 0;
    await expect(
      first.prepareSchema(schema(BY_AUTHOR), {
        progress: (index, documents) => {
          expect(index).toBe("messages.by_author");
          before += documents;
          // A restart after the first chunk: what is on disk is what a kill leaves.
          if (before >= 600) first.close();
        },
      }),
    ).rejects.toThrow("A newer schema replaced this one");
    open.splice(open.indexOf(first), 1);
    expect(before).toBeGreaterThan(0);
    expect(before).toBeLessThan(2_000);

    const second = openDb(dir);
    const tx = new Transaction(second, { readOnly: false });
    tx.insert("messages", { author: "a1", body: "after the restart" });
    tx.patch(ids[0], { author: "a1" });
    tx.delete(ids[11]);
    second.commit(tx.pendingWrites());
    let after = 0;
    await second.prepareSchema(schema(BY_AUTHOR), {
      progress: (_index, documents) => (after += documents),
    });
    second.setSchema(schema(BY_AUTHOR));
    // Only what the first run had not reached is read again.
    expect(after).toBeGreaterThanOrEqual(2_000 - before - 1);
    expect(after).toBeLessThanOrEqual(2_000 - before + 1);
    const expected = read(second, fullScan)
      .filter((d) => d.author === "a1")
      .map((d) => d._id);
    expect(read(second, byAuthor("a1")).map((d) => d._id)).toEqual(expected);
    expect(expected).toContain(ids[0]);
    expect(expected).not.toContain(ids[11]);
  });

  test("a dropped index is gone from queries and a changed one serves its new fields", () => {
    const dir = tempDir();
    const db = openDb(dir);
    db.setSchema(schema(BY_AUTHOR));
    insertMany(db, [
      { author: "x", body: "2" },
      { author: "x", body: "1" },
    ]);
    db.setSchema(
      schema([{ indexDescriptor: "by_author", fields: ["author", "body"] }]),
    );
    expect(read(db, byAuthor("x")).map((d) => d.body)).toEqual(["1", "2"]);
    db.setSchema(schema([]));
    expect(() => read(db, byAuthor("x"))).toThrow(
      "Index messages.by_author not found.",
    );
  });
});

describe("index writes", () => {
  const indexes = [
    { indexId: 1, tableNumber: 1, name: "by_id", keyFields: ["_id"] },
    {
      indexId: 2,
      tableNumber: 1,
      name: "by_creation_time",
      keyFields: ["_creationTime", "_id"],
    },
    {
      indexId: 3,
      tableNumber: 1,
      name: "by_author",
      keyFields: ["author", "_creationTime", "_id"],
    },
  ].map((i) => ({ ...i, state: "ready" as const }));
  const doc: Doc = { _id: "id1", _creationTime: 5, author: "a", body: "x" };

  test("a patch that leaves every key unchanged touches no index", () => {
    expect(indexWritesFor(indexes, "id1", doc, { ...doc, body: "y" })).toEqual(
      [],
    );
  });

  test("a patch of an indexed field rewrites only that index's entry", () => {
    const writes = indexWritesFor(indexes, "id1", doc, { ...doc, author: "b" });
    expect(writes.map((w) => w.indexId)).toEqual([3]);
    expect(writes[0].remove).not.toBeNull();
    expect(writes[0].add).not.toBeNull();
  });

  test("inserts and deletes write every index", () => {
    expect(
      indexWritesFor(indexes, "id1", null, doc).map((w) => w.remove),
    ).toEqual([null, null, null]);
    expect(indexWritesFor(indexes, "id1", doc, null).map((w) => w.add)).toEqual(
      [null, null, null],
    );
  });
});
