import type { Value } from "convex/values";
import { describe, expect, test } from "vitest";
import type { KeyRange } from "./indexRange.ts";
import type { Doc } from "../values/wire.ts";
import { type DocumentChange, ReadSet } from "./readSet.ts";

const WHOLE: KeyRange = {
  start: { key: [], inclusive: true },
  end: { key: [], inclusive: true },
};
const KEY_FIELDS = ["_creationTime", "_id"];

function doc(creationTime: number, fields: Record<string, Value> = {}): Doc {
  return { _id: `id${creationTime}`, _creationTime: creationTime, ...fields };
}

const inserted = (d: Doc, table = "messages"): DocumentChange[] => [
  { table, id: d._id, before: null, after: d },
];

describe("ReadSet", () => {
  test("a newest-first first page is invalidated by a newer row, not by an older one below it", () => {
    const reads = new ReadSet();
    const scan = reads.addScan(
      "messages",
      KEY_FIELDS,
      WHOLE,
      "desc",
      undefined,
    );
    scan.lastKey = [50, "id50"]; // the page read rows 100 down to 50 and stopped
    expect(reads.overlaps(inserted(doc(101)))).toBe(true);
    expect(reads.overlaps(inserted(doc(75)))).toBe(true);
    expect(reads.overlaps(inserted(doc(10)))).toBe(false);
  });

  test("a later page covers only its own interval", () => {
    const reads = new ReadSet();
    const scan = reads.addScan("messages", KEY_FIELDS, WHOLE, "desc", [
      50,
      "id50",
    ]);
    scan.lastKey = [20, "id20"];
    expect(reads.overlaps(inserted(doc(101)))).toBe(false);
    expect(reads.overlaps(inserted(doc(30)))).toBe(true);
    expect(reads.overlaps(inserted(doc(5)))).toBe(false);
  });

  test("a scan that ran to the end covers its whole range, including rows added past its last key", () => {
    const reads = new ReadSet();
    const scan = reads.addScan("messages", KEY_FIELDS, WHOLE, "asc", undefined);
    scan.lastKey = [3, "id3"];
    scan.done = true;
    expect(reads.overlaps(inserted(doc(1000)))).toBe(true);
  });

  test("a scan that never produced a row has read nothing", () => {
    const reads = new ReadSet();
    reads.addScan("messages", KEY_FIELDS, WHOLE, "asc", undefined);
    expect(reads.overlaps(inserted(doc(1)))).toBe(false);
  });

  test("an index range only sees writes whose key is inside it, before or after the write", () => {
    const reads = new ReadSet();
    const byAuthor: KeyRange = {
      start: { key: ["alice"], inclusive: true },
      end: { key: ["alice"], inclusive: true },
    };
    reads.addScan(
      "messages",
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
