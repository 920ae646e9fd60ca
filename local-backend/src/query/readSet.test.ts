import type { Value } from "convex/values";
import { describe, expect, test } from "vitest";
import type { Doc } from "../values/wire.ts";
import {
  afterCursor,
  encodeKey,
  type IndexKey,
  type KeyRange,
  type Order,
  rangeToInterval,
} from "./keys.ts";
import {
  advance,
  type DocumentChange,
  ReadSet,
  type ScanRecord,
} from "./readSet.ts";

const WHOLE: KeyRange = {
  start: { key: [], inclusive: true },
  end: { key: [], inclusive: true },
};
const KEY_FIELDS = ["_creationTime", "_id"];

function doc(creationTime: number, fields: Record<string, Value> = {}): Doc {
  return { _id: `id${creationTime}`, _creationTime: creationTime, ...fields };
}

// A scan of `range` in `order`, starting after a cursor's key when given.
function addScan(
  reads: ReadSet,
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
  return reads.addScan("messages", keyFields, interval, order);
}

const inserted = (d: Doc, table = "messages"): DocumentChange[] => [
  { table, id: d._id, before: null, after: d },
];

describe("ReadSet", () => {
  test("the same range scanned again shares one record, which covers what either scan read", () => {
    const reads = new ReadSet();
    const first = addScan(reads, KEY_FIELDS, WHOLE, "asc", undefined);
    advance(first, encodeKey([10, "id10"]));
    advance(first, encodeKey([20, "id20"]));
    const again = addScan(reads, KEY_FIELDS, WHOLE, "asc", undefined);
    expect(again).toBe(first);
    expect(reads.scans).toHaveLength(1);
    // The second scan starts over; what the first read stays covered.
    advance(again, encodeKey([10, "id10"]));
    expect(reads.overlaps(inserted(doc(15)))).toBe(true);
    expect(reads.overlaps(inserted(doc(25)))).toBe(false);
  });

  test("scans that differ in table, fields, order or either bound are records of their own, and each repeated one shares its record, however many a read set holds", () => {
    const reads = new ReadSet();
    const key = (n: number) => encodeKey([n, `id${n}`]);
    // 40 distinct scans: past the few a read set compares one by one.
    const distinct: [string, string[], { lo: Buffer; hi: Buffer }, Order][] =
      [];
    for (let i = 0; i < 10; i++) {
      distinct.push([
        "messages",
        KEY_FIELDS,
        { lo: key(i), hi: key(100) },
        "asc",
      ]);
      distinct.push([
        "messages",
        KEY_FIELDS,
        { lo: key(0), hi: key(101 + i) },
        "asc",
      ]);
      distinct.push([
        "messages",
        ["author", ...KEY_FIELDS],
        { lo: key(i), hi: key(100) },
        "desc",
      ]);
      distinct.push([`t${i}`, KEY_FIELDS, { lo: key(0), hi: key(100) }, "asc"]);
    }
    const records = distinct.map(([table, fields, interval, order]) =>
      reads.addScan(table, fields, interval, order),
    );
    expect(new Set(records).size).toBe(distinct.length);
    // The same again, with equal (not identical) keys and fields.
    distinct.forEach(([table, fields, { lo, hi }, order], i) =>
      expect(
        reads.addScan(
          table,
          [...fields],
          { lo: Buffer.from(lo), hi: Buffer.from(hi) },
          order,
        ),
      ).toBe(records[i]),
    );
    expect(reads.scans).toEqual(records);
  });

  test("a newest-first first page is invalidated by a newer row, not by an older one below it", () => {
    const reads = new ReadSet();
    const scan = addScan(reads, KEY_FIELDS, WHOLE, "desc", undefined);
    scan.lastKey = encodeKey([50, "id50"]); // the page read rows 100 down to 50 and stopped
    expect(reads.overlaps(inserted(doc(101)))).toBe(true);
    expect(reads.overlaps(inserted(doc(75)))).toBe(true);
    expect(reads.overlaps(inserted(doc(10)))).toBe(false);
  });

  test("a later page covers only its own interval", () => {
    const reads = new ReadSet();
    const scan = addScan(reads, KEY_FIELDS, WHOLE, "desc", [50, "id50"]);
    scan.lastKey = encodeKey([20, "id20"]);
    expect(reads.overlaps(inserted(doc(101)))).toBe(false);
    expect(reads.overlaps(inserted(doc(30)))).toBe(true);
    expect(reads.overlaps(inserted(doc(5)))).toBe(false);
  });

  test("a scan that ran to the end covers its whole range, including rows added past its last key", () => {
    const reads = new ReadSet();
    const scan = addScan(reads, KEY_FIELDS, WHOLE, "asc", undefined);
    scan.lastKey = encodeKey([3, "id3"]);
    scan.done = true;
    expect(reads.overlaps(inserted(doc(1000)))).toBe(true);
  });

  test("a scan that never produced a row has read nothing", () => {
    const reads = new ReadSet();
    addScan(reads, KEY_FIELDS, WHOLE, "asc", undefined);
    expect(reads.overlaps(inserted(doc(1)))).toBe(false);
  });

  test("an index range only sees writes whose key is inside it, before or after the write", () => {
    const reads = new ReadSet();
    const byAuthor: KeyRange = {
      start: { key: ["alice"], inclusive: true },
      end: { key: ["alice"], inclusive: true },
    };
    addScan(
      reads,
      ["author", "_creationTime", "_id"],
      byAuthor,
      "asc",
      undefined,
    ).done = true;
    expect(reads.overlaps(inserted(doc(1, { author: "bob" })))).toBe(false);
    expect(reads.overlaps(inserted(doc(1, { author: "alice" })))).toBe(true);
    // Moving a row out of the range changes the result too.
    const moved: DocumentChange = {
      table: "messages",
      id: "id1",
      before: doc(1, { author: "alice" }),
      after: doc(1, { author: "bob" }),
    };
    expect(reads.overlaps([moved])).toBe(true);
  });

  test("documents fetched by ID and counted tables are invalidated by any write to them", () => {
    const reads = new ReadSet();
    reads.addId("users", "id7");
    reads.addTable("counters");
    expect(reads.overlaps(inserted(doc(7), "users"))).toBe(true);
    expect(reads.overlaps(inserted(doc(8), "users"))).toBe(false);
    expect(reads.overlaps(inserted(doc(8), "counters"))).toBe(true);
    expect(reads.overlaps(inserted(doc(8), "other"))).toBe(false);
  });
});
