import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { jsonToConvex } from "convex/values";
import { afterEach, describe, expect, test } from "vitest";
import { Transaction } from "../functions/transaction.ts";
import { cutAfterSpin } from "../../test/watchdogCut.ts";
import { decodeId, FIRST_USER_TABLE_NUMBER } from "../values/ids.ts";
import { FULL_RANGE, rangeToInterval } from "../query/keys.ts";
import {
  Database,
  type SchemaJson,
  SchemaViolationError,
  type SyncHook,
} from "./database.ts";
import {
  type CommitBatch,
  DataDirectoryLockedError,
  MAX_SNAPSHOTS,
  SESSION_REQUEST_PRUNE_BATCH,
  SESSION_REQUEST_RETENTION_NS,
  SqliteStore,
} from "./sqliteStore.ts";

const dirs: string[] = [];
const open: Database[] = [];
afterEach(() => {
  for (const db of open.splice(0)) db.close();
  for (const dir of dirs.splice(0))
    fs.rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "db-test-"));
  dirs.push(dir);
  return dir;
}

function openDb(dir: string): Database {
  const db = Database.open(dir);
  open.push(db);
  return db;
}

function closeDb(db: Database): void {
  db.close();
  open.splice(open.indexOf(db), 1);
}

function insert(
  db: Database,
  table: string,
  value: Record<string, string | number>,
): string {
  const tx = new Transaction(db, { readOnly: false });
  const id = tx.insert(table, value);
  db.commit(tx.pendingWrites());
  return id;
}

/** The ids of a table's documents, by a full table scan (its `by_creation_time` index). */
function scanIds(db: Database, table: string): string[] {
  return [
    ...new Transaction(db, { readOnly: true }).stream({
      source: { type: "FullTableScan", tableName: table, order: null },
      operators: [],
    }),
  ].map((doc) => doc._id);
}

/** The schema with a text search index on `messages.body`. */
function withSearchIndex(schema: SchemaJson): SchemaJson {
  return {
    ...schema,
    tables: schema.tables.map((table) =>
      table.tableName === "messages"
        ? {
            ...table,
            searchIndexes: [
              {
                indexDescriptor: "search_body",
                searchField: "body",
                filterFields: [],
              },
            ],
          }
        : table,
    ),
  };
}

const messagesSchema: SchemaJson = {
  tables: [
    {
      tableName: "messages",
      indexes: [{ indexDescriptor: "by_author", fields: ["author"] }],
      documentType: {
        type: "object",
        value: {
          author: { fieldType: { type: "string" }, optional: false },
          body: { fieldType: { type: "string" }, optional: false },
        },
      },
    },
  ],
  schemaValidation: true,
};

describe("Database", () => {
  test("a reopened database has every document with the same _id and _creationTime", () => {
    const dir = tempDir();
    const db = openDb(dir);
    const ids = Array.from({ length: 20 }, (_, i) =>
      insert(db, "messages", { author: "a", body: `m${i}` }),
    );
    const before = ids.map((id) => db.getDocument(id));
    const lastTs = db.lastTs;
    closeDb(db);

    const reopened = openDb(dir);
    expect(ids.map((id) => reopened.getDocument(id))).toEqual(before);
    expect(reopened.lastTs).toBe(lastTs);
  });

  test("commit timestamps and creation times keep increasing across a restart", () => {
    const dir = tempDir();
    const db = openDb(dir);
    const first = insert(db, "t", { n: 1 });
    const firstTs = db.lastTs;
    const firstCreation = db.getDocument(first)!._creationTime;
    closeDb(db);

    const reopened = openDb(dir);
    const second = insert(reopened, "t", { n: 2 });
    expect(reopened.lastTs).toBeGreaterThan(firstTs);
    expect(reopened.getDocument(second)!._creationTime).toBeGreaterThan(
      firstCreation,
    );
  });

  test("user tables get numbers from 10001 and keep them across a restart", () => {
    const dir = tempDir();
    const db = openDb(dir);
    const a = insert(db, "alpha", { n: 1 });
    const b = insert(db, "beta", { n: 1 });
    expect(decodeId(a)!.tableNumber).toBe(FIRST_USER_TABLE_NUMBER);
    expect(decodeId(b)!.tableNumber).toBe(FIRST_USER_TABLE_NUMBER + 1);
    closeDb(db);

    const reopened = openDb(dir);
    expect(reopened.tableOfId(a)?.name).toBe("alpha");
    expect(reopened.tableOfId(b)?.name).toBe("beta");
    expect(decodeId(insert(reopened, "gamma", { n: 1 }))!.tableNumber).toBe(
      FIRST_USER_TABLE_NUMBER + 2,
    );
  });

  test("a second database on the same directory is refused while the first is open", () => {
    const dir = tempDir();
    openDb(dir);
    expect(() => Database.open(dir)).toThrow(DataDirectoryLockedError);
  });

  test("a de-duplication record commits with the writes and survives a restart", () => {
    const dir = tempDir();
    const db = openDb(dir);
    const tx = new Transaction(db, { readOnly: false });
    tx.insert("t", { n: 1 });
    const { ts } = db.commit(tx.pendingWrites(), {
      sessionId: "client-1",
      requestId: 7,
      outcome: '{"status":"success"}',
    });
    closeDb(db);

    const reopened = openDb(dir);
    expect(reopened.findSessionRequest("client-1", 7)).toEqual({
      outcome: '{"status":"success"}',
      ts,
    });
    expect(reopened.findSessionRequest("client-1", 8)).toBeNull();
  });

  test("a schema that existing documents violate is refused and the old one stays", () => {
    const db = openDb(tempDir());
    insert(db, "messages", { author: "a", body: "ok" });
    insert(db, "messages", { author: "a", text: "old field" });
    expect(() => db.setSchema(messagesSchema)).toThrow(SchemaViolationError);
    expect(db.schema).toBeNull();
  });

  test("with schema validation, a write that does not match the schema is refused", () => {
    const db = openDb(tempDir());
    db.setSchema(messagesSchema);
    const tx = new Transaction(db, { readOnly: false });
    expect(() => tx.insert("messages", { author: "a", body: 3 })).toThrow(
      /does not match the schema/,
    );
    expect(tx.insert("messages", { author: "a", body: "fine" })).toMatch(
      /^[0-9a-z]{32}$/,
    );
  });

  test("db.vars.commitTs placeholders are stored as the commit timestamp", () => {
    // What `db.vars.commitTs` arrives as in a write syscall.
    const commitTsPlaceholder = jsonToConvex({ $commitTs: null });
    const dir = tempDir();
    const db = openDb(dir);
    const tx = new Transaction(db, { readOnly: false });
    const id = tx.insert("t", {
      at: commitTsPlaceholder,
      nested: [commitTsPlaceholder],
    });
    const { ts } = db.commit(tx.pendingWrites());
    expect(db.getDocument(id)).toMatchObject({ at: ts, nested: [ts] });
    closeDb(db);
    expect(openDb(dir).getDocument(id)).toMatchObject({
      at: ts,
      nested: [ts],
    });
  });

  test("a client's observed timestamp moves the clock forward, unless it is far in the future", () => {
    const db = openDb(tempDir());
    const soon = BigInt(Date.now() + 60_000) * 1_000_000n;
    db.advanceClockPast(soon);
    expect(db.lastTs).toBe(soon);
    db.advanceClockPast((1n << 63n) - 2n);
    expect(db.lastTs).toBe(soon);
    insert(db, "t", { n: 1 });
    expect(db.lastTs).toBe(soon + 1n);
  });

  test("commit listeners hear which tables changed", () => {
    const db = openDb(tempDir());
    const heard: string[][] = [];
    db.onCommit(({ tables }) => heard.push([...tables].sort()));
    const tx = new Transaction(db, { readOnly: false });
    tx.insert("a", { n: 1 });
    tx.insert("b", { n: 1 });
    db.commit(tx.pendingWrites());
    expect(heard).toEqual([["a", "b"]]);
  });
});

describe("group commit", () => {
  /** A sync hook whose fsyncs start at once but report back only when the test says. */
  function heldSyncs() {
    const held: { release: () => void; reported: Promise<void> }[] = [];
    const events: string[] = [];
    const hook: SyncHook = (sync) => {
      const done = sync();
      let release!: () => void;
      const reported = new Promise<void>((resolve) => (release = resolve))
        .then(() => done)
        .then(() => void events.push("fsync"));
      held.push({ release, reported });
      return reported;
    };
    return {
      hook,
      events,
      held,
      /** Lets the oldest held fsync report, and waits for what it wakes. */
      async release() {
        const next = held.shift()!;
        next.release();
        await next.reported;
        await new Promise((resolve) => setImmediate(resolve));
      },
    };
  }

  test("a commit is durable only after its group's fsync; commits made during an fsync share the next one", async () => {
    const syncs = heldSyncs();
    const db = Database.open(tempDir(), { syncHook: syncs.hook });
    open.push(db);
    const first = insert(db, "messages", { author: "a", body: "first" });
    const firstTs = db.lastTs;
    const waiting: Promise<void>[] = [
      db.durable(firstTs).then(() => void syncs.events.push("first durable")),
    ];
    for (let i = 0; i < 49; i++) {
      insert(db, "messages", { author: "a", body: `m${i}` });
      const ts = db.lastTs;
      waiting.push(
        db.durable(ts).then(() => void syncs.events.push(`durable ${ts}`)),
      );
    }
    expect(db.getDocument(first)).not.toBeNull();
    expect(db.isDurable(firstTs)).toBe(false);
    expect(syncs.held).toHaveLength(1);

    await syncs.release();
    expect(syncs.events).toEqual(["fsync", "first durable"]);
    expect(db.isDurable(db.lastTs)).toBe(false);
    // The 49 commits made while the first fsync ran share the second.
    expect(syncs.held).toHaveLength(1);

    await syncs.release();
    await Promise.all(waiting);
    expect(syncs.events.slice(2, 3)).toEqual(["fsync"]);
    expect(syncs.events.slice(3)).toHaveLength(49);
    expect(syncs.held).toHaveLength(0);
    expect(db.isDurable(db.lastTs)).toBe(true);
  });

  test("a commit that fails inside its group's SQLite transaction leaves the group's other commits", async () => {
    const file = path.join(tempDir(), "db.sqlite3");
    const store = SqliteStore.open(file);
    const batch = (ts: bigint, id: string, fail = false): CommitBatch => ({
      ts,
      lastCreationTime: 0,
      newTables: [],
      newIndexes: [],
      writes: [{ id, tableNumber: FIRST_USER_TABLE_NUMBER, json: `"${id}"` }],
      indexWrites: [],
      counts: new Map(),
      inTransaction: fail
        ? () => {
            throw new Error("refused");
          }
        : undefined,
    });
    store.commit(batch(1n, "a"));
    expect(() => store.commit(batch(2n, "b", true))).toThrow("refused");
    store.commit(batch(3n, "c"));
    await store.sync();
    store.close();

    const reopened = SqliteStore.open(file);
    expect(["a", "b", "c"].map((id) => reopened.getDocument(id))).toEqual([
      '"a"',
      null,
      '"c"',
    ]);
    expect(reopened.loadRegistry().lastTs).toBe(3n);
    reopened.close();
  });

  test("a group's table counts and clocks are its last successful commit's, once for the group", async () => {
    const file = path.join(tempDir(), "db.sqlite3");
    const store = SqliteStore.open(file);
    const table = { name: "t", number: FIRST_USER_TABLE_NUMBER, count: 0 };
    const batch = (ts: bigint, count: number, fail = false): CommitBatch => ({
      ts,
      lastCreationTime: Number(ts) * 10,
      newTables: ts === 1n ? [table] : [],
      newIndexes: [],
      writes: [
        { id: `d${ts}`, tableNumber: FIRST_USER_TABLE_NUMBER, json: "1" },
      ],
      indexWrites: [],
      counts: new Map([[FIRST_USER_TABLE_NUMBER, count]]),
      inTransaction: fail
        ? () => {
            throw new Error("refused");
          }
        : undefined,
    });
    store.commit(batch(1n, 1));
    store.commit(batch(2n, 2));
    expect(() => store.commit(batch(3n, 3, true))).toThrow("refused");
    await store.sync();
    // A second group starts from what the first left.
    store.commit(batch(4n, 3));
    expect(() => store.commit(batch(5n, 4, true))).toThrow("refused");
    store.close();

    const reopened = SqliteStore.open(file);
    const registry = reopened.loadRegistry();
    expect(registry.lastTs).toBe(4n);
    expect(registry.lastCreationTime).toBe(40);
    expect(registry.tables).toEqual([{ ...table, count: 3 }]);
    reopened.close();
  });

  test("a session's stored requests are found whatever order they are asked in, before and after a reopen", async () => {
    const file = path.join(tempDir(), "db.sqlite3");
    const store = SqliteStore.open(file);
    const batch = (ts: bigint, requestId: number): CommitBatch =>
      sessionRequestBatch(ts, "s", requestId, `"r${requestId}"`);
    expect(store.findSessionRequest("s", 0)).toBeNull();
    store.commit(batch(1n, 0));
    store.commit(batch(2n, 1));
    const outcomes = (ids: number[]) =>
      ids.map((id) => store.findSessionRequest("s", id)?.outcome ?? null);
    expect(outcomes([1, 0, 2])).toEqual(['"r1"', '"r0"', null]);
    // Out of order: a lower id committed after a higher one.
    store.commit(batch(3n, 5));
    store.commit(batch(4n, 3));
    expect(outcomes([3, 5, 4, 6])).toEqual(['"r3"', '"r5"', null, null]);
    await store.sync();
    store.close();

    const reopened = SqliteStore.open(file);
    expect(
      [6, 5, 0, 3].map(
        (id) => reopened.findSessionRequest("s", id)?.outcome ?? null,
      ),
    ).toEqual([null, '"r5"', '"r0"', '"r3"']);
    reopened.close();
  });

  test("session requests past the retention are forgotten, a batch per group commit, and newer ones kept", async () => {
    const file = path.join(tempDir(), "db.sqlite3");
    const store = SqliteStore.open(file);
    const batch = (ts: bigint, sessionId: string, requestId: number) =>
      sessionRequestBatch(
        ts,
        sessionId,
        requestId,
        `"${sessionId}${requestId}"`,
      );
    // Twice a batch and a half of old requests, over a few sessions, in one group.
    const old = Math.floor(SESSION_REQUEST_PRUNE_BATCH * 2.5);
    for (let i = 0; i < old; i++)
      store.commit(batch(BigInt(i + 1), `old${i % 7}`, Math.floor(i / 7)));
    await store.sync();
    const stored = (sessionId: string, requestId: number) =>
      store.findSessionRequest(sessionId, requestId)?.outcome ?? null;
    expect(stored("old0", 0)).toBe('"old00"');
    const remaining = () =>
      Array.from({ length: old }, (_, i) =>
        stored(`old${i % 7}`, Math.floor(i / 7)),
      ).filter((outcome) => outcome !== null).length;

    // A week and more later: each group deletes one batch, the oldest first.
    let ts = SESSION_REQUEST_RETENTION_NS + BigInt(old) + 1n;
    const groups: number[] = [];
    for (let group = 0; group < 4; group++) {
      store.commit(batch(ts++, "new", group));
      await store.sync();
      groups.push(remaining());
    }
    expect(groups).toEqual([
      old - SESSION_REQUEST_PRUNE_BATCH,
      old - 2 * SESSION_REQUEST_PRUNE_BATCH,
      0,
      0,
    ]);
    expect(stored("old0", 0)).toBeNull();
    expect([0, 1, 2, 3].map((id) => stored("new", id))).toEqual([
      '"new0"',
      '"new1"',
      '"new2"',
      '"new3"',
    ]);
    store.close();
    const reopened = SqliteStore.open(file);
    expect(reopened.findSessionRequest("old6", 0)).toBeNull();
    expect(reopened.findSessionRequest("new", 3)?.outcome).toBe('"new3"');
    reopened.close();
  });

  test("a data file of this version without the session requests' ts index gets it at open", () => {
    const file = path.join(tempDir(), "db.sqlite3");
    SqliteStore.open(file).close();
    const raw = new BetterSqlite3(file);
    raw.exec("DROP INDEX session_requests_by_ts");
    raw.close();
    SqliteStore.open(file).close();
    const check = new BetterSqlite3(file, { readonly: true });
    const plan = check
      .prepare(
        "EXPLAIN QUERY PLAN SELECT session_id FROM session_requests WHERE ts < 5 ORDER BY ts LIMIT 10",
      )
      .all() as { detail: string }[];
    check.close();
    expect(plan.map((row) => row.detail).join(" ")).toContain(
      "session_requests_by_ts",
    );
  });

  test("a failed fsync fails what waits for it and every later commit", async () => {
    const db = Database.open(tempDir(), {
      syncHook: () => Promise.reject(new Error("EIO: i/o error, fdatasync")),
    });
    open.push(db);
    insert(db, "messages", { author: "a", body: "lost?" });
    await expect(db.durable(db.lastTs)).rejects.toThrow(
      "Recent writes may not be on disk (EIO: i/o error, fdatasync)",
    );
    expect(() => insert(db, "messages", { author: "a", body: "more" })).toThrow(
      "restart the backend",
    );
  });

  test("a listener that throws fails its commit's caller but stops nothing", () => {
    const db = openDb(tempDir());
    let listener: () => void = () => {
      throw new Error("an ordinary failure");
    };
    db.onCommit(() => listener());
    const tx = new Transaction(db, { readOnly: false });
    const id = tx.insert("messages", { author: "a", body: "b" });
    expect(() => db.commit(tx.pendingWrites())).toThrow("an ordinary failure");
    expect(db.getDocument(id)).toMatchObject({ body: "b" });
    listener = () => undefined;
    insert(db, "messages", { author: "a", body: "still open" });
  });

  // A commit goes to the group writer's thread, or (when it keeps a search
  // index) into a savepoint of the store's own connection; on the writer's
  // path a cut undoes a commit only before it was added to its group, a
  // window of a few calls, so "undone" is asked for on the savepoint path.
  test.each([
    { path: "the group writer", schema: messagesSchema, undone: 0 },
    {
      path: "a savepoint of a group that keeps a search index",
      schema: withSearchIndex(messagesSchema),
      undone: 3,
    },
  ])(
    "a commit a watchdog cuts anywhere is kept whole or undone whole, and the database goes on ($path)",
    async ({ schema, undone }) => {
      // V8's watchdog ends host code at any call (no catch, no finally), as a
      // shared window's does when the machine stalls mid-commit. Cuts land at
      // random points: before, inside and after the commit's statements.
      const dir = tempDir();
      const db = openDb(dir);
      db.setSchema(schema);
      const announced: number[] = [];
      db.onCommit(({ commit }) => announced.push(commit));
      const committed = new Map<string, string>();
      const seen = { none: 0, undone: 0, kept: 0 };
      let round = 0;
      while ((seen.kept < 3 || seen.undone < undone) && round < 4_000) {
        round++;
        const tx = new Transaction(db, { readOnly: false });
        const ids = Array.from({ length: 40 }, (_, i) =>
          tx.insert("messages", {
            author: `a${i % 5}`,
            body: `r${round}m${i}`,
          }),
        );
        // And a delete of an earlier document, so counts go both ways.
        const victim = committed.keys().next().value;
        if (victim !== undefined) tx.delete(victim);
        const before = db.commitCount;
        db.holdAnnouncements = true;
        const writes = tx.pendingWrites();
        cutAfterSpin(() => db.commit(writes), Math.random() * 1.5);
        const outcome = db.recoverCut();
        db.releaseAnnouncements();
        tx.close();
        seen[outcome]++;
        const kept = db.commitCount === before + 1;
        if (outcome !== "none") expect(kept).toBe(outcome === "kept");
        for (const id of ids) expect(db.getDocument(id) !== null).toBe(kept);
        if (kept) {
          for (const id of ids) committed.set(id, `r${round}`);
          if (victim !== undefined) committed.delete(victim);
        }
        if (victim !== undefined)
          expect(db.getDocument(victim) === null).toBe(kept);
      }
      expect(seen.kept).toBeGreaterThanOrEqual(3);
      expect(seen.undone).toBeGreaterThanOrEqual(undone);

      const byAuthor = () =>
        db.table("messages")!.indexes.find((i) => i.name === "by_author")!;
      const indexed = (from: Database) =>
        new Set(
          [...from.scan(byAuthor(), rangeToInterval(FULL_RANGE), "asc")].map(
            (e) => e.doc._id,
          ),
        );
      expect(db.table("messages")!.count).toBe(committed.size);
      expect(indexed(db)).toEqual(new Set(committed.keys()));
      // Each commit announced once, in order.
      expect(announced).toEqual(
        Array.from({ length: db.commitCount }, (_, i) => i + 1),
      );
      // The fsync was not left stuck by a cut.
      await db.durable(db.lastTs);
      insert(db, "messages", { author: "z", body: "after the cuts" });
      closeDb(db);

      const reopened = openDb(dir);
      expect(reopened.table("messages")!.count).toBe(committed.size + 1);
      for (const id of committed.keys())
        expect(reopened.getDocument(id)).not.toBeNull();
      expect(indexed(reopened).size).toBe(committed.size + 1);
    },
  );

  test(
    "a mutation's first insert into a new table that a watchdog cuts leaves the table whole: its documents are found by queries, also after a restart, and schema pushes go on",
    { timeout: 120_000 },
    async () => {
      // The insert registers the table inside the function's window
      // (`tableForWrite`). Each window makes new tables until the watchdog
      // ends it, so every cut lands in a first insert, most of them inside
      // the registration.
      const dir = tempDir();
      const db = openDb(dir);
      let tables = 0;
      for (let round = 0; round < 300; round++) {
        cutAfterSpin(
          () => {
            const tx = new Transaction(db, { readOnly: false });
            for (;;) tx.insert(`t${tables++}`, { n: 0 });
          },
          0.8 + Math.random() * 0.2,
        );
        expect(db.recoverCut()).toBe("none");
      }
      const names = Array.from({ length: tables }, (_, i) => `t${i}`);
      // Later mutations write into every table the cut ones touched (a few
      // thousand per mutation, inside its limit of 16,000 writes).
      const ids: string[] = [];
      for (let from = 0; from < names.length; from += 4_000) {
        const tx = new Transaction(db, { readOnly: false });
        for (const table of names.slice(from, from + 4_000))
          ids.push(tx.insert(table, { n: -1 }));
        db.commit(tx.pendingWrites());
        tx.close();
      }
      // Before: two tables of one number failed this ("UNIQUE constraint
      // failed: tables.number"), and the reopened file had none of it.
      await db.durable(db.lastTs);
      // Before: a table left without its indexes returned [] here.
      expect(names.map((table) => scanIds(db, table))).toEqual(
        ids.map((id) => [id]),
      );
      db.setSchema(null);
      closeDb(db);
      const reopened = openDb(dir);
      expect(names.map((table) => scanIds(reopened, table))).toEqual(
        ids.map((id) => [id]),
      );
      // Before: a table whose `by_id` a cut had kept in memory only failed
      // this with a TypeError ("reading 'indexId'").
      reopened.setSchema(null);
    },
  );

  test(
    "a commit that keeps a search index, cut while it waits for the group before it, loses none of that group: it is read, durable and there after a restart",
    { timeout: 120_000 },
    async () => {
      // As in a shared window: a commit goes to the open group (its
      // announcement held), then one to a table with a search index runs on
      // the store's connection, so it first posts that group and waits for
      // it (`quiesce`, then `seal`), under the watchdog.
      const dir = tempDir();
      const db = openDb(dir);
      db.setSchema(withSearchIndex(messagesSchema));
      const kept: string[] = [];
      let cuts = 0;
      for (let round = 0; round < 600; round++) {
        db.holdAnnouncements = true;
        kept.push(insert(db, "plain", { n: round }));
        const tx = new Transaction(db, { readOnly: false });
        tx.insert("messages", { author: "a", body: `hello ${round}` });
        const writes = tx.pendingWrites();
        if (cutAfterSpin(() => db.commit(writes), 0.8 + Math.random() * 0.25))
          cuts++;
        db.recoverCut();
        db.releaseAnnouncements();
        tx.close();
        await db.durable(db.lastTs);
        // Before: a cut between posting the group and sending it let the
        // next group's answer drop its layer, and its commit was gone here.
        if (round % 50 === 49) expect(scanIds(db, "plain")).toEqual(kept);
      }
      expect(cuts).toBeGreaterThan(0);
      expect(scanIds(db, "plain")).toEqual(kept);
      closeDb(db);
      // Before: a cut between taking the open group and posting it kept it
      // in memory only, reported durable but never written.
      const reopened = openDb(dir);
      expect(kept.filter((id) => reopened.getDocument(id) === null)).toEqual(
        [],
      );
    },
  );

  test("reads that a watchdog cuts keep the document cache's count of its bytes exact", async () => {
    const db = openDb(tempDir());
    const ids: string[] = [];
    for (let from = 0; from < 30_000; from += 5_000) {
      const tx = new Transaction(db, { readOnly: false });
      for (let i = from; i < from + 5_000; i++)
        ids.push(tx.insert("docs", { body: "x".repeat(50 + (i % 200)) }));
      db.commit(tx.pendingWrites());
      tx.close();
    }
    await db.durable(db.lastTs);
    // More documents than the cache holds: reads move entries to the back,
    // add them and evict others, until the cut.
    for (let round = 0; round < 300; round++) {
      cutAfterSpin(
        () => {
          const tx = new Transaction(db, { readOnly: true });
          for (;;) tx.get(ids[Math.floor(Math.random() * ids.length)]);
        },
        0.5 + Math.random() * 0.5,
      );
    }
    // Before: each cut between the count's change and the map's left it
    // off by a document, for good (hundreds of bytes in 300 cuts).
    const { bytes, countedBytes } = db.cacheStats;
    expect(countedBytes).toBe(bytes);
  });

  test("closing syncs the commits still waiting for their group", async () => {
    const dir = tempDir();
    const syncs = heldSyncs();
    const db = Database.open(dir, { syncHook: syncs.hook });
    const id = insert(db, "messages", { author: "a", body: "at close" });
    const durable = db.durable(db.lastTs);
    db.close();
    await durable;
    syncs.held.shift()!.release();

    const reopened = openDb(dir);
    expect(reopened.getDocument(id)).toMatchObject({ body: "at close" });
  });

  test("a commit after close is refused: its fsync would never come", () => {
    const dir = tempDir();
    const db = Database.open(dir);
    const tx = new Transaction(db, { readOnly: false });
    tx.insert("messages", { author: "a", body: "too late" });
    db.close();
    expect(() => db.commit(tx.pendingWrites())).toThrow(
      "The database is closed",
    );
  });

  test("a snapshot keeps showing the state it was pinned at while commits change, add and delete documents", () => {
    const db = openDb(tempDir());
    db.setSchema(messagesSchema);
    const kept = insert(db, "messages", { author: "a", body: "kept" });
    const changed = insert(db, "messages", { author: "a", body: "before" });
    const deleted = insert(db, "messages", { author: "a", body: "deleted" });
    // Not yet synced: its group is still open when the snapshot is pinned.
    const unsynced = insert(db, "messages", { author: "a", body: "unsynced" });
    const index = db.table("messages")!.queryable("by_author")!;
    const interval = rangeToInterval(FULL_RANGE);
    const bodies = (read: { scan: Database["scan"] }): string[] =>
      [...read.scan(index, interval, "asc")].map(
        (entry) => entry.doc.body as string,
      );
    // Scanned first, so the cache holds the versions a commit then replaces.
    expect(bodies(db)).toEqual(["kept", "before", "deleted", "unsynced"]);

    const snapshot = db.snapshot()!;
    expect(snapshot.ts).toBe(db.lastTs);
    const write = (id: string, doc: Record<string, string> | null) => {
      const tx = new Transaction(db, { readOnly: false });
      if (doc === null) tx.delete(id);
      else tx.replace(id, doc);
      db.commit(tx.pendingWrites());
    };
    write(changed, { author: "a", body: "after" });
    write(deleted, null);
    const added = insert(db, "messages", { author: "a", body: "added" });
    expect(snapshot.current).toBe(false);

    expect(bodies(snapshot)).toEqual(["kept", "before", "deleted", "unsynced"]);
    expect(snapshot.getDocument(changed)).toMatchObject({ body: "before" });
    expect(snapshot.getDocument(deleted)).toMatchObject({ body: "deleted" });
    expect(snapshot.getDocument(added)).toBeNull();
    expect(snapshot.getDocument(kept)).toMatchObject({ body: "kept" });
    expect(snapshot.getDocument(unsynced)).toMatchObject({ body: "unsynced" });
    // The latest state has moved on meanwhile.
    expect(bodies(db)).toEqual(["kept", "after", "unsynced", "added"]);

    snapshot.release();
    expect(() => snapshot.getDocument(kept)).toThrow(/released snapshot/);
    const next = db.snapshot()!;
    expect(bodies(next)).toEqual(["kept", "after", "unsynced", "added"]);
    next.release();
  });

  test("a snapshot held while commits grow the WAL by its cap has expired, none is pinned past twice the cap, and pins resume once the WAL rewinds", async () => {
    const dir = tempDir();
    const db = Database.open(dir, { walCapBytes: 256 * 1024 });
    open.push(db);
    const snapshot = db.snapshot()!;
    expect(snapshot.expired).toBe(false);
    // About 1 MiB of documents, each group fsynced (COMMITted) in turn: the
    // WAL cannot rewind behind the pinned reader, so it passes the cap.
    for (let i = 0; i < 100; i++) {
      insert(db, "messages", { author: "a", body: "x".repeat(10_000) });
      if (i % 10 === 9) await db.durable(db.lastTs);
    }
    expect(snapshot.current).toBe(false);
    expect(snapshot.expired).toBe(true);
    snapshot.release();
    // Over twice its cap, the WAL must rewind before another reader pins it.
    expect(db.snapshot()).toBeNull();
    let fresh = null;
    for (let i = 0; i < 200 && fresh === null; i++) {
      insert(db, "messages", { author: "a", body: "small" });
      await db.durable(db.lastTs);
      await new Promise((resolve) => setTimeout(resolve, 10));
      fresh = db.snapshot();
    }
    if (fresh === null) throw new Error("no snapshot after the WAL rewound");
    expect(fresh.expired).toBe(false);
    fresh.release();
  });

  test("at most MAX_SNAPSHOTS snapshots are pinned at once, and a released one frees its place", () => {
    const db = openDb(tempDir());
    const pinned = Array.from({ length: MAX_SNAPSHOTS }, () => db.snapshot());
    expect(pinned.every((snapshot) => snapshot !== null)).toBe(true);
    expect(db.snapshot()).toBeNull();
    pinned[0]!.release();
    // Releasing twice gives back one place, not two.
    pinned[0]!.release();
    const again = db.snapshot();
    expect(again).not.toBeNull();
    expect(db.snapshot()).toBeNull();
    for (const snapshot of [again, ...pinned.slice(1)]) snapshot!.release();
    // Closing with none pinned, then with one pinned: both close cleanly.
    db.snapshot();
  });
});

/** A commit that writes nothing but a mutation's de-duplication record. */
function sessionRequestBatch(
  ts: bigint,
  sessionId: string,
  requestId: number,
  outcome: string,
): CommitBatch {
  return {
    ts,
    lastCreationTime: 0,
    newTables: [],
    newIndexes: [],
    writes: [],
    indexWrites: [],
    counts: new Map(),
    sessionRequest: { sessionId, requestId, outcome },
  };
}
