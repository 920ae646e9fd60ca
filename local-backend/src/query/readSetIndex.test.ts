/**
 * The interval index against the read sets themselves: for random scans,
 * cursors, fetched IDs and counted tables, and random writes, the index finds
 * exactly the read sets whose `overlaps` is true (never fewer: a missed
 * re-run is a stale page; never more: an extra re-run is wasted work).
 */
import type { Value } from "convex/values";
import { describe, expect, test } from "vitest";
import {
  afterCursor,
  encodeKey,
  type IndexKey,
  type KeyRange,
  type Order,
  rangeToInterval,
} from "./keys.ts";
import { type DocumentChange, ReadSet, type ScanRecord } from "./readSet.ts";
import { ReadSetIndex } from "./readSetIndex.ts";
import type { Doc } from "../values/wire.ts";

const KEY_FIELDS = ["group", "rank", "_creationTime", "_id"];
const BY_TIME = ["_creationTime", "_id"];
const GROUPS: (Value | undefined)[] = [undefined, null, "a", "b", "c", 1];

/** A small deterministic generator, so a failure can be replayed from its seed. */
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

type Rng = ReturnType<typeof random>;

function randomDoc(rng: Rng, n: number): Doc {
  const doc: Doc = { _id: `id${n}`, _creationTime: n };
  const group = rng.pick(GROUPS);
  if (group !== undefined) doc.group = group;
  if (rng.next() < 0.9) doc.rank = rng.int(6);
  return doc;
}

// A scan of `range` in `order`, starting after a cursor's key when given.
function addScan(
  reads: ReadSet,
  table: string,
  keyFields: string[],
  range: KeyRange,
  order: Order,
  after: IndexKey | undefined,
): ScanRecord {
  const interval = afterCursor(
    rangeToInterval(range),
    order,
    after === undefined ? undefined : encodeKey(after),
  );
  return reads.addScan(table, keyFields, interval, order);
}

function key(doc: Doc, fields: string[]): IndexKey {
  return fields.map((f) => doc[f]);
}

/** A range of the shape `boundsToKeyRange` makes: equalities, then bounds on the next field. */
function randomRange(rng: Rng, fields: string[]): KeyRange {
  const eqCount = rng.int(Math.min(3, fields.length));
  const eq: IndexKey = [];
  for (let i = 0; i < eqCount; i++)
    eq.push(fields[i] === "group" ? rng.pick(GROUPS) : rng.int(6));
  const value = () =>
    fields[eqCount] === "group" ? rng.pick(GROUPS) : rng.int(7);
  const lower = rng.next() < 0.5;
  const upper = rng.next() < 0.5;
  return {
    start: lower
      ? { key: [...eq, value()], inclusive: rng.next() < 0.5 }
      : { key: eq, inclusive: true },
    end: upper
      ? { key: [...eq, value()], inclusive: rng.next() < 0.5 }
      : { key: eq, inclusive: true },
  };
}

function randomReadSet(rng: Rng, docs: Doc[]): ReadSet {
  const reads = new ReadSet();
  const scans = rng.int(3);
  for (let i = 0; i < scans; i++) {
    const table = rng.pick(["items", "other"]);
    const fields = rng.next() < 0.7 ? KEY_FIELDS : BY_TIME;
    const someKey = () => key(rng.pick(docs), fields);
    const scan = addScan(
      reads,
      table,
      fields,
      randomRange(rng, fields),
      rng.pick(["asc", "desc"] as const),
      rng.next() < 0.3 ? someKey() : undefined,
    );
    const progress = rng.int(3);
    if (progress >= 1) scan.lastKey = encodeKey(someKey());
    if (progress === 2 || rng.next() < 0.2) scan.done = true;
  }
  if (rng.next() < 0.3) reads.addId("items", rng.pick(docs)._id);
  if (rng.next() < 0.1) reads.addTable(rng.pick(["items", "other"]));
  return reads;
}

function randomChanges(rng: Rng, docs: Doc[], next: () => number) {
  const changes: DocumentChange[] = [];
  const count = 1 + rng.int(3);
  for (let i = 0; i < count; i++) {
    const table = rng.next() < 0.8 ? "items" : "other";
    const kind = rng.int(3);
    // IDs name their table, so the same ID never appears in two tables.
    const picked = rng.pick(docs);
    const existing =
      table === "items" ? picked : { ...picked, _id: `other-${picked._id}` };
    if (kind === 0) {
      const doc = randomDoc(rng, next());
      changes.push({ table, id: doc._id, before: null, after: doc });
    } else if (kind === 1) {
      const after = {
        ...randomDoc(rng, existing._creationTime),
        _id: existing._id,
      };
      changes.push({ table, id: existing._id, before: existing, after });
    } else {
      changes.push({ table, id: existing._id, before: existing, after: null });
    }
  }
  return changes;
}

describe("ReadSetIndex", () => {
  test("finds exactly the read sets a write overlaps, for random reads, writes and deletions", () => {
    for (let seed = 1; seed <= 40; seed++) {
      const rng = random(seed);
      let counter = 0;
      const next = () => ++counter;
      const docs = Array.from({ length: 30 }, () => randomDoc(rng, next()));
      const index = new ReadSetIndex<number>();
      const readSets = new Map<number, ReadSet>();
      for (let step = 0; step < 300; step++) {
        const subscriber = rng.int(60);
        const action = rng.next();
        if (action < 0.5) {
          const reads = randomReadSet(rng, docs);
          readSets.set(subscriber, reads);
          index.set(subscriber, reads);
        } else if (action < 0.6) {
          readSets.delete(subscriber);
          index.delete(subscriber);
        } else if (action < 0.65) {
          // Many at once: most of them (the rest filed again), or a few.
          const share = rng.next() < 0.5 ? 0.9 : 0.1;
          const leaving = new Set(
            [...readSets.keys()].filter(() => rng.next() < share),
          );
          for (const s of leaving) readSets.delete(s);
          index.deleteAll(leaving);
        } else {
          const changes = randomChanges(rng, docs, next);
          const expected = [...readSets]
            .filter(([, reads]) => reads.overlaps(changes))
            .map(([s]) => s)
            .sort((a, b) => a - b);
          const found = [...index.affected(changes)].sort((a, b) => a - b);
          expect(found, `seed ${seed}, step ${step}`).toEqual(expected);
        }
      }
      expect(index.size).toBe(readSets.size);
    }
  });

  test("a write into one channel finds only that channel's first pages", () => {
    const index = new ReadSetIndex<string>();
    const fields = ["channel", "_creationTime", "_id"];
    for (let c = 0; c < 100; c++) {
      const reads = new ReadSet();
      const channel = `c${c}`;
      addScan(
        reads,
        "messages",
        fields,
        {
          start: { key: [channel], inclusive: true },
          end: { key: [channel], inclusive: true },
        },
        "desc",
        undefined,
      ).lastKey = encodeKey([channel, 50, "id50"]);
      index.set(channel, reads);
    }
    const doc = { _id: "new", _creationTime: 99, channel: "c42" };
    const insert: DocumentChange[] = [
      { table: "messages", id: "new", before: null, after: doc },
    ];
    expect([...index.affected(insert)]).toEqual(["c42"]);
    // Older than the page's last row: below what the page read.
    const old = { _id: "old", _creationTime: 10, channel: "c42" };
    expect(
      index.affected([
        { table: "messages", id: "old", before: null, after: old },
      ]).size,
    ).toBe(0);
  });

  test("deleting a subscriber takes all of its intervals, IDs and tables out", () => {
    const index = new ReadSetIndex<string>();
    const reads = new ReadSet();
    addScan(
      reads,
      "items",
      BY_TIME,
      {
        start: { key: [], inclusive: true },
        end: { key: [], inclusive: true },
      },
      "asc",
      undefined,
    ).done = true;
    reads.addId("users", "u1");
    reads.addTable("counters");
    index.set("s", reads);
    const writes = (table: string, id: string): DocumentChange[] => [
      {
        table,
        id,
        before: null,
        after: { _id: id, _creationTime: 1 },
      },
    ];
    expect(index.affected(writes("items", "x")).size).toBe(1);
    expect(index.affected(writes("users", "u1")).size).toBe(1);
    expect(index.affected(writes("counters", "y")).size).toBe(1);
    index.delete("s");
    expect(index.size).toBe(0);
    expect(index.affected(writes("items", "x")).size).toBe(0);
    expect(index.affected(writes("users", "u1")).size).toBe(0);
    expect(index.affected(writes("counters", "y")).size).toBe(0);
  });

  test("a predicate read (a text search) is found by the writes it accepts, before or after, until deleted", () => {
    const index = new ReadSetIndex<string>();
    const reads = new ReadSet();
    reads.addPredicate("notes", (doc) => doc.tag === "hit");
    index.set("search", reads);
    const write = (before: string | null, after: string | null) => [
      {
        table: "notes",
        id: "n1",
        before:
          before === null ? null : { _id: "n1", _creationTime: 1, tag: before },
        after:
          after === null ? null : { _id: "n1", _creationTime: 1, tag: after },
      },
    ];
    expect(index.affected(write(null, "miss")).size).toBe(0);
    expect(index.affected(write(null, "hit")).size).toBe(1);
    expect(index.affected(write("hit", null)).size).toBe(1);
    expect(
      index.affected([{ ...write(null, "hit")[0], table: "other" }]).size,
    ).toBe(0);
    index.delete("search");
    expect(index.affected(write(null, "hit")).size).toBe(0);
  });
});
