import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { afterEach, describe, expect, test } from "vitest";
import { cutAfterSpin } from "../../test/watchdogCut.ts";
import { FIRST_USER_TABLE_NUMBER } from "../values/ids.ts";
import type { KeyInterval, Order } from "../query/keys.ts";
import {
  GroupLayer,
  mergeScan,
  type PendingEntry,
  pendingDocument,
} from "./groupWriter.ts";
import {
  type CommitBatch,
  CommitGroupLostError,
  SqliteStore,
} from "./sqliteStore.ts";

const dirs: string[] = [];
const stores: SqliteStore[] = [];
afterEach(() => {
  for (const store of stores.splice(0)) store.close();
  for (const dir of dirs.splice(0))
    fs.rmSync(dir, { recursive: true, force: true });
});

function openStore(): { store: SqliteStore; file: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "group-writer-"));
  dirs.push(dir);
  const file = path.join(dir, "db.sqlite3");
  const store = SqliteStore.open(file);
  stores.push(store);
  return { store, file };
}

/** A connection of its own to the file: what is in it, whatever the store's layers hold. */
function fileReader(file: string) {
  const db = new BetterSqlite3(file, { readonly: true });
  return {
    document: (id: string) =>
      (
        db.prepare("SELECT json FROM documents WHERE id = ?").get(id) as
          { json: string } | undefined
      )?.json ?? null,
    close: () => db.close(),
  };
}

const INDEX = 7;

function key(n: number): Buffer {
  return Buffer.from([n >> 8, n & 0xff]);
}

function batch(
  ts: bigint,
  docs: { id: string; json: string | null; remove?: number; add?: number }[],
  extra: Partial<CommitBatch> = {},
): CommitBatch {
  return {
    ts,
    lastCreationTime: Number(ts),
    newTables: [],
    newIndexes: [],
    writes: docs.map(({ id, json }) => ({
      id,
      tableNumber: FIRST_USER_TABLE_NUMBER,
      json,
    })),
    indexWrites: docs
      .filter((d) => d.remove !== undefined || d.add !== undefined)
      .map((d) => ({
        indexId: INDEX,
        docId: d.id,
        remove: d.remove === undefined ? null : key(d.remove),
        add: d.add === undefined ? null : key(d.add),
      })),
    counts: new Map(),
    ...extra,
  };
}

describe("reads over groups the writer's thread has not written", () => {
  test("the index entries of the file and of the layers merge into exactly the scan of their union (random model)", () => {
    // A seeded generator, so a failure can be replayed.
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const int = (n: number) => Math.floor(random() * n);
    for (let round = 0; round < 300; round++) {
      // The file: a sorted set of keys; the layers: adds and removes on top.
      const file = new Map<number, string>();
      for (let i = 0; i < int(40); i++) file.set(int(64), `f${i}`);
      const model = new Map(file);
      const layers: GroupLayer[] = [];
      let ts = 1n;
      for (let l = 0; l < 1 + int(3); l++) {
        const layer = new GroupLayer();
        for (let c = 0; c < int(4); c++) {
          const docs: {
            id: string;
            json: string;
            add?: number;
            remove?: number;
          }[] = [];
          for (let w = 0; w < 1 + int(6); w++) {
            const k = int(64);
            if (model.has(k) && random() < 0.5) {
              docs.push({ id: model.get(k)!, json: "1", remove: k });
              model.delete(k);
            } else {
              const id = `l${round}.${l}.${c}.${w}`;
              docs.push({ id, json: "1", add: k });
              model.set(k, id);
            }
          }
          layer.add(batch(ts++, docs));
        }
        layers.push(layer);
      }
      const sortedFile = [...file].sort((a, b) => a[0] - b[0]);
      for (let q = 0; q < 10; q++) {
        const lo = int(64);
        const hi = lo + int(64 - lo + 1);
        const order: Order = random() < 0.5 ? "asc" : "desc";
        const limit = 1 + int(12);
        const interval: KeyInterval = { lo: key(lo), hi: key(hi) };
        const scan = (rows: number): PendingEntry[] => {
          const inRange = sortedFile.filter(([k]) => k >= lo && k < hi);
          if (order === "desc") inRange.reverse();
          return inRange
            .slice(0, rows)
            .map(([k, docId]) => ({ key: key(k), docId }));
        };
        const got = mergeScan(layers, INDEX, interval, order, limit, scan);
        const want = [...model]
          .filter(([k]) => k >= lo && k < hi)
          .sort((a, b) => (order === "asc" ? a[0] - b[0] : b[0] - a[0]))
          .slice(0, limit)
          .map(([k, docId]) => ({ key: key(k), docId }));
        expect(got, `round ${round} [${lo}, ${hi}) ${order} ${limit}`).toEqual(
          want,
        );
      }
    }
  });

  test("a document's newest layer wins, a delete included", () => {
    const older = new GroupLayer();
    older.add(
      batch(1n, [
        { id: "a", json: "1" },
        { id: "b", json: "2" },
      ]),
    );
    const newer = new GroupLayer();
    newer.add(batch(2n, [{ id: "a", json: null }]));
    expect(pendingDocument([older, newer], "a")).toBeNull();
    expect(pendingDocument([older, newer], "b")).toBe("2");
    expect(pendingDocument([older, newer], "c")).toBeUndefined();
  });

  test("a commit is read back at once, before its group is in the file, and is in the file after its sync", async () => {
    const { store, file } = openStore();
    const reader = fileReader(file);
    store.commit(
      batch(1n, [{ id: "a", json: '"a"', add: 1 }], {
        sessionRequest: { sessionId: "s", requestId: 0, outcome: "{}" },
      }),
    );
    // Synchronously after the commit: nothing has reached the thread yet.
    expect(reader.document("a")).toBeNull();
    expect(store.getDocument("a")).toBe('"a"');
    const interval = { lo: key(0), hi: key(10) };
    expect(store.scanIndex(INDEX, interval, "asc", 10)).toEqual([
      { key: key(1), docId: "a" },
    ]);
    expect(store.findSessionRequest("s", 0)).toEqual({ outcome: "{}", ts: 1n });
    // A session looked up before its commit, as a mutation is.
    expect(store.findSessionRequest("t", 4)).toBeNull();
    store.commit(
      batch(2n, [{ id: "b", json: '"b"' }], {
        sessionRequest: { sessionId: "t", requestId: 4, outcome: "[]" },
      }),
    );
    expect(store.findSessionRequest("t", 4)).toEqual({ outcome: "[]", ts: 2n });
    await store.sync();
    expect(reader.document("a")).toBe('"a"');
    expect(store.getDocument("a")).toBe('"a"');
    // Found in the file now, as before in the layers.
    expect(store.findSessionRequest("s", 0)).toEqual({ outcome: "{}", ts: 1n });
    expect(store.findSessionRequest("t", 4)).toEqual({ outcome: "[]", ts: 2n });
    reader.close();
  });

  test("a snapshot pinned while its group is on its way to the thread sees it, and no later commit", async () => {
    const { store } = openStore();
    store.commit(batch(1n, [{ id: "a", json: '"a1"', add: 1 }]));
    const snapshot = store.snapshot()!;
    store.commit(batch(2n, [{ id: "a", json: '"a2"', remove: 1, add: 2 }]));
    store.commit(batch(3n, [{ id: "b", json: '"b"', add: 3 }]));
    const interval = { lo: key(0), hi: key(10) };
    const read = () => ({
      a: snapshot.getDocument("a"),
      b: snapshot.getDocument("b"),
      entries: snapshot.scanIndex(INDEX, interval, "asc", 10),
    });
    const pinned = {
      a: '"a1"',
      b: null,
      entries: [{ key: key(1), docId: "a" }],
    };
    expect(read()).toEqual(pinned);
    await store.sync();
    expect(read()).toEqual(pinned);
    snapshot.release();
    expect(store.scanIndex(INDEX, interval, "asc", 10)).toEqual([
      { key: key(2), docId: "a" },
      { key: key(3), docId: "b" },
    ]);
  });

  test("a write through the store's own connection waits until the thread has written every commit before it", () => {
    const { store, file } = openStore();
    const reader = fileReader(file);
    store.commit(batch(1n, [{ id: "a", json: '"a"' }]));
    expect(reader.document("a")).toBeNull();
    store.setMeta("mark", "after a");
    // Without the wait the two connections could both write; with it, the
    // commit is in the file before the mark.
    expect(reader.document("a")).toBe('"a"');
    reader.close();
  });
});

describe("syncs", () => {
  test("a sync asked for while another's fsync runs is answered after it, and closing waits for both", async () => {
    // Each round: a group and its fsync in flight, a second group and a
    // blocking sync behind it, then a close, as a backend stopping mid-burst.
    for (let round = 0; round < 20; round++) {
      const { store, file } = openStore();
      store.commit(batch(1n, [{ id: "a", json: '"a"' }]));
      const first = store.sync();
      store.commit(batch(2n, [{ id: "b", json: '"b"' }]));
      store.syncNow();
      await first;
      store.close();
      stores.splice(stores.indexOf(store), 1);
      const reader = fileReader(file);
      expect([reader.document("a"), reader.document("b")]).toEqual([
        '"a"',
        '"b"',
      ]);
      reader.close();
    }
  });
});

describe("a group the writer's thread fails to write", () => {
  test("fails its sync and every later commit, and none of it is in the file", async () => {
    const { store, file } = openStore();
    const table = { name: "t", number: FIRST_USER_TABLE_NUMBER, count: 0 };
    store.commit(batch(1n, [{ id: "a", json: '"a"' }], { newTables: [table] }));
    // The same table registered twice: the group's second INSERT violates
    // `tables.name`'s uniqueness, which the database never lets happen.
    store.commit(batch(2n, [{ id: "b", json: '"b"' }], { newTables: [table] }));
    await expect(store.sync()).rejects.toThrow(/UNIQUE/);
    expect(() => store.commit(batch(3n, [{ id: "c", json: '"c"' }]))).toThrow(
      CommitGroupLostError,
    );
    expectNoneAfterReopen(store, file, ["a", "b", "c"]);
  });

  test("the groups posted behind it before its answer came are not written either", async () => {
    const { store, file } = openStore();
    const table = { name: "t", number: FIRST_USER_TABLE_NUMBER, count: 0 };
    store.commit(batch(1n, [{ id: "a", json: '"a"' }], { newTables: [table] }));
    store.commit(batch(2n, [{ id: "b", json: '"b"' }], { newTables: [table] }));
    // A snapshot posts the failing group; the next one (which may build on
    // its writes) goes to the thread before the main thread has its answer.
    store.snapshot()?.release();
    store.commit(batch(3n, [{ id: "c", json: '"c"' }]));
    await expect(store.sync()).rejects.toThrow(/UNIQUE/);
    expectNoneAfterReopen(store, file, ["a", "b", "c"]);
  });
});

describe("a blocking wait that a function's watchdog cuts", () => {
  // An inline commit that keeps a search index waits for the thread inside
  // the function's window (`quiesce`), where V8's watchdog ends host code at
  // any call, with no `finally`: between taking an answer and noting it,
  // say. Cuts land at random points of waits for 30 groups at a time.
  const cutWhile = (work: () => void) =>
    cutAfterSpin(work, Math.random() * 0.2);

  test(
    "loses no answer: the next wait ends, reads see the newest write, and syncs settle",
    { timeout: 120_000 },
    async () => {
      const { store, file } = openStore();
      let ts = 0n;
      let cuts = 0;
      for (let round = 0; round < 300; round++) {
        for (let group = 0; group < 30; group++) {
          ts++;
          store.commit(batch(ts, [{ id: "x", json: `"${ts}"` }]));
          // Posts the group: 30 answers to take.
          store.snapshot()?.release();
        }
        if (cutWhile(() => store.setMeta("mark", String(ts)))) cuts++;
        // No COMMITted group's layer left to shadow a later one.
        expect(store.getDocument("x")).toBe(`"${ts}"`);
        // Before: an answer lost to a cut left this wait to run out its 30 s,
        // and fail the store ("the group writer thread did not answer").
        store.setMeta("mark", String(ts));
        await store.sync();
      }
      expect(cuts).toBeGreaterThan(30);
      store.close();
      stores.splice(stores.indexOf(store), 1);
      const reader = fileReader(file);
      expect(reader.document("x")).toBe(`"${ts}"`);
      reader.close();
    },
  );

  test(
    "a group that failed fails the store wherever a cut lands in the wait for its answer",
    { timeout: 120_000 },
    async () => {
      let cuts = 0;
      for (let round = 0; round < 12; round++) {
        const { store, file } = openStore();
        const table = { name: "t", number: FIRST_USER_TABLE_NUMBER, count: 0 };
        store.commit(
          batch(1n, [{ id: "a", json: '"a"' }], { newTables: [table] }),
        );
        // The same table registered twice (see above): the thread fails it.
        store.commit(
          batch(2n, [{ id: "b", json: '"b"' }], { newTables: [table] }),
        );
        let failed = false;
        try {
          if (cutWhile(() => store.setMeta("mark", "m"))) cuts++;
        } catch (error) {
          expect(error).toBeInstanceOf(CommitGroupLostError);
          failed = true;
        }
        if (!failed)
          expect(() => store.setMeta("mark", "m")).toThrow(
            CommitGroupLostError,
          );
        await expect(store.sync()).rejects.toThrow();
        expectNoneAfterReopen(store, file, ["a", "b"]);
      }
      expect(cuts).toBeGreaterThan(0);
    },
  );
});

/** Closes `store`: neither its file nor the store reopened on it has any of `ids`. */
function expectNoneAfterReopen(
  store: SqliteStore,
  file: string,
  ids: string[],
): void {
  store.close();
  stores.splice(stores.indexOf(store), 1);
  const reader = fileReader(file);
  expect(ids.map((id) => reader.document(id))).toEqual(ids.map(() => null));
  reader.close();
  const reopened = SqliteStore.open(file);
  stores.push(reopened);
  expect(ids.map((id) => reopened.getDocument(id))).toEqual(
    ids.map(() => null),
  );
}
