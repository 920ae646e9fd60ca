import { describe, test, expect } from "vitest";
import { compareValues, convexToJson, type Value } from "convex/values";
import {
  boundsToKeyRange,
  compareKeys,
  compileIndexRange,
  type IndexBounds,
  indexKey,
  indexedFieldsWithSuffix,
  type IndexKey,
  type IndexRangeExpr,
} from "./indexRange.ts";
import { encodeKey, intervalContains, rangeToInterval } from "./keys.ts";

// The same shapes as convex 1.48 `index_range_builder_impl.ts`.
function r(
  type: IndexRangeExpr["type"],
  fieldPath: string,
  value: Value | undefined,
): IndexRangeExpr {
  return {
    type,
    fieldPath,
    value: value === undefined ? { $undefined: null } : convexToJson(value),
  };
}
const eq = (f: string, v: Value | undefined) => r("Eq", f, v);
const gt = (f: string, v: Value | undefined) => r("Gt", f, v);
const gte = (f: string, v: Value | undefined) => r("Gte", f, v);
const lt = (f: string, v: Value | undefined) => r("Lt", f, v);
const lte = (f: string, v: Value | undefined) => r("Lte", f, v);

function compileMessage(fields: string[], range: IndexRangeExpr[]): string {
  try {
    compileIndexRange("messages.by_ab", fields, range);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("expected compileIndexRange to throw");
}

describe("indexedFieldsWithSuffix", () => {
  test("appends the implicit suffix", () => {
    expect(indexedFieldsWithSuffix(["author"])).toEqual([
      "author",
      "_creationTime",
      "_id",
    ]);
    expect(indexedFieldsWithSuffix(["_creationTime"])).toEqual([
      "_creationTime",
      "_id",
    ]);
    expect(indexedFieldsWithSuffix(["_id"])).toEqual(["_id"]);
    expect(indexedFieldsWithSuffix(["author", "_creationTime", "_id"])).toEqual(
      ["author", "_creationTime", "_id"],
    );
    expect(indexedFieldsWithSuffix(["_creationTime", "_id"])).toEqual([
      "_creationTime",
      "_id",
    ]);
  });

  test("compileIndexRange gives the same bounds with or without the suffix", () => {
    const range = [eq("a", 1), gt("_creationTime", 5)];
    expect(
      compileIndexRange("t.idx", ["a", "_creationTime", "_id"], range),
    ).toEqual(compileIndexRange("t.idx", ["a"], range));
  });
});

describe("compileIndexRange accepts valid shapes", () => {
  test("no range at all", () => {
    const bounds = compileIndexRange("messages.by_ab", ["a", "b"], []);
    expect(bounds).toEqual({
      indexName: "messages.by_ab",
      fields: ["a", "b", "_creationTime", "_id"],
      eq: [],
    });
  });

  test("equalities on a prefix, then both bounds on the next field", () => {
    const bounds = compileIndexRange(
      "messages.by_ab",
      ["a", "b"],
      [eq("a", 1n), gt("b", 2), lte("b", 9)],
    );
    expect(bounds.eq).toEqual([1n]);
    expect(bounds.lower).toEqual({ value: 2, inclusive: false });
    expect(bounds.upper).toEqual({ value: 9, inclusive: true });
  });

  test("equalities may be written in any order, as the backend sorts them", () => {
    const bounds = compileIndexRange(
      "messages.by_ab",
      ["a", "b"],
      [eq("b", "y"), eq("a", "x")],
    );
    expect(bounds.eq).toEqual(["x", "y"]);
  });

  test("the implicit suffix can be used", () => {
    const bounds = compileIndexRange(
      "messages.by_ab",
      ["a", "b"],
      [eq("a", 1), eq("b", 2), eq("_creationTime", 3), gte("_id", "k")],
    );
    expect(bounds.eq).toEqual([1, 2, 3]);
    expect(bounds.lower).toEqual({ value: "k", inclusive: true });
  });

  test("built-in indexes", () => {
    expect(
      compileIndexRange(
        "messages.by_creation_time",
        ["_creationTime"],
        [gt("_creationTime", 5)],
      ).lower,
    ).toEqual({
      value: 5,
      inclusive: false,
    });
    expect(
      compileIndexRange("messages.by_id", ["_id"], [eq("_id", "x")]).eq,
    ).toEqual(["x"]);
  });

  test("undefined bounds decode from the $undefined marker", () => {
    const bounds = compileIndexRange(
      "messages.by_ab",
      ["a", "b"],
      [eq("a", undefined), lt("b", undefined)],
    );
    expect(bounds.eq).toEqual([undefined]);
    expect(bounds.upper).toEqual({ value: undefined, inclusive: false });
  });

  test("an upper bound alone or before the lower bound", () => {
    const bounds = compileIndexRange(
      "messages.by_ab",
      ["a", "b"],
      [lt("a", 3), gte("a", 1)],
    );
    expect(bounds).toMatchObject({
      eq: [],
      lower: { value: 1, inclusive: true },
      upper: { value: 3, inclusive: false },
    });
  });
});

describe("compileIndexRange rejects invalid shapes with the backend's messages", () => {
  test("a field that is not in the index", () => {
    expect(compileMessage(["a", "b"], [eq("c", 1)])).toBe(
      'The index range included a comparison with "c", but messages.by_ab with fields ' +
        '["a", "b", "_creationTime"] doesn\'t index this field. ' +
        "For more information see https://docs.convex.dev/using/indexes.",
    );
    expect(compileMessage(["a", "b"], [eq("a", 1), gt("z", 1)])).toMatch(
      /comparison with "z"/,
    );
  });

  test("fields used out of index order", () => {
    expect(compileMessage(["a", "b"], [eq("b", 1)])).toBe(
      "Tried to query index messages.by_ab but the query didn't use the index fields in order.\n" +
        'Index fields: ["a", "b", "_creationTime"]\n' +
        'Query fields: ["b"]\n' +
        'First incorrect field: "b"\n' +
        "For more information see https://docs.convex.dev/using/indexes.",
    );
    expect(compileMessage(["a", "b"], [gt("a", 1), eq("b", 2)])).toMatch(
      /Query fields: \["b", "a"\]\nFirst incorrect field: "b"/,
    );
    expect(compileMessage(["a", "b"], [gt("b", 1)])).toMatch(
      /First incorrect field: "b"/,
    );
  });

  test("a field used twice as an equality", () => {
    expect(compileMessage(["a", "b"], [eq("a", 1), eq("a", 2)])).toBe(
      'Already defined equality bound in index range. Can\'t add "a" == 1.0.',
    );
  });

  test("two lower or two upper bounds", () => {
    expect(compileMessage(["a", "b"], [gt("a", 1), gte("a", 2n)])).toBe(
      'Already defined lower bound in index range. Can\'t add "a" >= 2.',
    );
    expect(compileMessage(["a", "b"], [lt("a", "x"), lt("a", "y")])).toBe(
      'Already defined upper bound in index range. Can\'t add "a" < "y".',
    );
  });

  test("bounds on two different fields", () => {
    expect(compileMessage(["a", "b"], [gt("a", 1), lt("b", 2)])).toBe(
      "Upper and lower bounds in `range` can only be applied to a single index field. " +
        'This query against index messages.by_ab attempted to set a range bound on both "a" and "b". ' +
        "Consider using `filter` instead. See https://docs.convex.dev/using/indexes for more info.",
    );
  });

  test("an equality and a bound on the same field", () => {
    expect(compileMessage(["a", "b"], [eq("a", 1), gt("a", 0)])).toBe(
      'Already defined inequality bound in index range. Can\'t add "a" == 1.0.',
    );
  });

  test("malformed expressions", () => {
    expect(
      compileMessage(["a"], [{ type: "Ne" as "Eq", fieldPath: "a", value: 1 }]),
    ).toMatch(/Invalid index range expression/);
    expect(
      compileMessage(
        ["a"],
        [{ type: "Eq", fieldPath: 1 as unknown as string, value: 1 }],
      ),
    ).toMatch(/Invalid index range expression/);
  });
});

describe("keys", () => {
  test("indexKey reads fields in order with undefined for missing ones", () => {
    const doc = { a: 1, nested: { b: "x" }, _creationTime: 10, _id: "id1" };
    expect(
      indexKey(doc, ["nested.b", "missing", "a", "_creationTime", "_id"]),
    ).toEqual(["x", undefined, 1, 10, "id1"]);
  });

  test("compareKeys is lexicographic with Convex's order", () => {
    expect(compareKeys([1n], [1])).toBeLessThan(0);
    expect(compareKeys([undefined], [null])).toBeLessThan(0);
    expect(compareKeys(["a", 2], ["a", 10])).toBeLessThan(0);
    expect(compareKeys(["b"], ["a", 10])).toBeGreaterThan(0);
    expect(compareKeys(["a"], ["a", 10])).toBeLessThan(0);
    expect(compareKeys(["a", null], ["a", null])).toBe(0);
  });
});

type Doc = {
  _id: string;
  _creationTime: number;
  [key: string]: Value | undefined;
};

function docs(values: (Value | undefined)[]): Doc[] {
  return values.map((x, i) => ({
    _id: `id${i}`,
    _creationTime: 1000 + i,
    ...(x === undefined ? {} : { x }),
  }));
}

// A reference model of a range, straight from `compareValues`: equalities,
// then both bounds on the next field (convex-backend `IndexRange::compile`).
function keyInBounds(key: IndexKey, bounds: IndexBounds): boolean {
  for (let i = 0; i < bounds.eq.length; i++) {
    if (compareValues(key[i], bounds.eq[i]) !== 0) return false;
  }
  const value = key[bounds.eq.length];
  if (bounds.lower !== undefined) {
    const cmp = compareValues(value, bounds.lower.value);
    if (bounds.lower.inclusive ? cmp < 0 : cmp <= 0) return false;
  }
  if (bounds.upper !== undefined) {
    const cmp = compareValues(value, bounds.upper.value);
    if (bounds.upper.inclusive ? cmp > 0 : cmp >= 0) return false;
  }
  return true;
}

function referenceCompare(a: IndexKey, b: IndexKey): number {
  for (let i = 0; i < a.length && i < b.length; i++) {
    const cmp = compareValues(a[i], b[i]);
    if (cmp !== 0) return cmp;
  }
  return Math.sign(a.length - b.length);
}

// Scans an index with the byte interval (as SQLite does) and with the
// reference model, and checks that they agree and that the byte order is the
// reference order, before returning the documents in index order.
function scan(
  all: Doc[],
  userFields: string[],
  range: IndexRangeExpr[],
): Doc[] {
  const bounds = compileIndexRange("t.idx", userFields, range);
  const entries = all
    .map((doc) => ({ doc, key: indexKey(doc, bounds.fields) }))
    .sort((a, b) => referenceCompare(a.key, b.key));
  const byBytes = [...entries].sort((a, b) =>
    Buffer.compare(encodeKey(a.key), encodeKey(b.key)),
  );
  expect(byBytes.map((e) => e.doc._id)).toEqual(entries.map((e) => e.doc._id));
  const interval = rangeToInterval(boundsToKeyRange(bounds));
  const byCheck = entries
    .filter((e) => keyInBounds(e.key, bounds))
    .map((e) => e.doc);
  const byInterval = entries
    .filter((e) => intervalContains(interval, encodeKey(e.key)))
    .map((e) => e.doc);
  expect(byInterval).toEqual(byCheck);
  return byCheck;
}

describe("ranges over mixed types", () => {
  const all = docs([
    undefined,
    null,
    3n,
    7n,
    4,
    5,
    6,
    true,
    "a",
    "b",
    new ArrayBuffer(1),
    [1],
    { k: 1 },
  ]);
  const xs = (found: Doc[]) => found.map((d) => d.x);

  test("gt(5) includes every type above float64 and excludes null and missing", () => {
    expect(xs(scan(all, ["x"], [gt("x", 5)]))).toEqual([
      6,
      true,
      "a",
      "b",
      new ArrayBuffer(1),
      [1],
      { k: 1 },
    ]);
  });

  test("int64 bounds never match floats", () => {
    expect(xs(scan(all, ["x"], [gte("x", 3n), lte("x", 7n)]))).toEqual([
      3n,
      7n,
    ]);
    expect(xs(scan(all, ["x"], [gt("x", 3n), lt("x", 4)]))).toEqual([7n]);
  });

  test("lt(null) selects only missing fields", () => {
    expect(scan(all, ["x"], [lt("x", null)]).map((d) => d._id)).toEqual([
      "id0",
    ]);
  });

  test("eq(undefined) matches missing fields but not null", () => {
    expect(scan(all, ["x"], [eq("x", undefined)]).map((d) => d._id)).toEqual([
      "id0",
    ]);
    expect(scan(all, ["x"], [eq("x", null)]).map((d) => d._id)).toEqual([
      "id1",
    ]);
  });

  test("an empty range selects nothing", () => {
    expect(scan(all, ["x"], [gt("x", 6), lt("x", 5)])).toEqual([]);
    expect(scan(all, ["x"], [gt("x", 5), lt("x", 5)])).toEqual([]);
  });
});

describe("prefix semantics and the implicit suffix", () => {
  const rows: Doc[] = [
    { _id: "d", _creationTime: 4, author: "ann", n: 2 },
    { _id: "a", _creationTime: 1, author: "bob", n: 1 },
    { _id: "c", _creationTime: 3, author: "ann", n: 1 },
    { _id: "b", _creationTime: 2, author: "ann", n: 1 },
    { _id: "e", _creationTime: 5, n: 9 },
  ];
  const ids = (found: Doc[]) => found.map((d) => d._id);

  test("equal index values come out in creation order", () => {
    expect(ids(scan(rows, ["author"], [eq("author", "ann")]))).toEqual([
      "b",
      "c",
      "d",
    ]);
    expect(ids(scan(rows, ["author"], []))).toEqual(["e", "b", "c", "d", "a"]);
  });

  test("an exclusive lower bound skips every key with that prefix", () => {
    expect(ids(scan(rows, ["author", "n"], [gt("author", "ann")]))).toEqual([
      "a",
    ]);
    expect(
      ids(scan(rows, ["author", "n"], [eq("author", "ann"), gt("n", 1)])),
    ).toEqual(["d"]);
  });

  test("an inclusive upper bound keeps every key with that prefix", () => {
    expect(ids(scan(rows, ["author", "n"], [lte("author", "ann")]))).toEqual([
      "e",
      "b",
      "c",
      "d",
    ]);
    expect(ids(scan(rows, ["author", "n"], [lt("author", "ann")]))).toEqual([
      "e",
    ]);
  });

  test("ranges on _creationTime after the user fields", () => {
    expect(
      ids(
        scan(
          rows,
          ["author"],
          [eq("author", "ann"), gt("_creationTime", 2), lt("_creationTime", 4)],
        ),
      ),
    ).toEqual(["c"]);
  });

  test("the creation-time index orders by _creationTime then _id", () => {
    expect(
      ids(scan(rows, ["_creationTime"], [gte("_creationTime", 2)])),
    ).toEqual(["b", "c", "d", "e"]);
  });
});

describe("binary search agrees with the per-key check", () => {
  test("on random keys and random bounds", () => {
    const pool: (Value | undefined)[] = [
      undefined,
      null,
      0n,
      1n,
      2n,
      0,
      1.5,
      2,
      false,
      true,
      "",
      "a",
      "b",
    ];
    const pick = () => pool[Math.floor(Math.random() * pool.length)];
    for (let round = 0; round < 200; round++) {
      const rows: Doc[] = Array.from({ length: 30 }, (_, i) => ({
        _id: `id${i}`,
        _creationTime: i,
        ...(Math.random() < 0.9 ? { a: pick() } : {}),
        ...(Math.random() < 0.9 ? { b: pick() } : {}),
      }));
      const range: IndexRangeExpr[] = [];
      if (Math.random() < 0.5) range.push(eq("a", pick()));
      const next = range.length === 0 ? "a" : "b";
      if (Math.random() < 0.6)
        range.push(r(Math.random() < 0.5 ? "Gt" : "Gte", next, pick()));
      if (Math.random() < 0.6)
        range.push(r(Math.random() < 0.5 ? "Lt" : "Lte", next, pick()));
      scan(rows, ["a", "b"], range);
    }
  });
});

describe("keyInBounds", () => {
  test("checks equalities then both bounds", () => {
    const bounds = compileIndexRange(
      "t.idx",
      ["a", "b"],
      [eq("a", "x"), gte("b", 2n), lt("b", 5n)],
    );
    const key = (a: Value | undefined, b: Value | undefined): IndexKey => [
      a,
      b,
      0,
      "id",
    ];
    expect(keyInBounds(key("x", 2n), bounds)).toBe(true);
    expect(keyInBounds(key("x", 4n), bounds)).toBe(true);
    expect(keyInBounds(key("x", 5n), bounds)).toBe(false);
    expect(keyInBounds(key("x", 1n), bounds)).toBe(false);
    expect(keyInBounds(key("y", 3n), bounds)).toBe(false);
    expect(keyInBounds(key("x", 3), bounds)).toBe(false);
    expect(keyInBounds(key("x", undefined), bounds)).toBe(false);
  });
});
