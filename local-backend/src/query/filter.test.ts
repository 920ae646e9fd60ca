import { describe, test, expect } from "vitest";
import { convexToJson, type JSONValue, type Value } from "convex/values";
import { displayValue } from "../values/wire.ts";
import { evaluateFilter, filterMatches, getFieldPath } from "./filter.ts";

// The same shapes as convex 1.48 `filter_builder_impl.ts`.
const field = (path: string): JSONValue => ({ $field: path });
const lit = (v: Value | undefined): JSONValue => ({
  $literal: v === undefined ? { $undefined: null } : convexToJson(v),
});
const bin = (op: string, l: JSONValue, r: JSONValue): JSONValue => ({
  [op]: [l, r],
});

const doc = {
  _id: "abc",
  _creationTime: 1700000000000,
  author: "ann",
  count: 5n,
  score: 2.5,
  done: true,
  nested: { level: { deep: 3 }, empty: null },
  tags: ["a", "b"],
};

describe("leaves", () => {
  test("fields read nested paths and missing fields are undefined", () => {
    expect(evaluateFilter(field("author"), doc)).toBe("ann");
    expect(evaluateFilter(field("nested.level.deep"), doc)).toBe(3);
    expect(evaluateFilter(field("nested.empty"), doc)).toBeNull();
    expect(evaluateFilter(field("missing"), doc)).toBeUndefined();
    expect(evaluateFilter(field("nested.missing.deeper"), doc)).toBeUndefined();
    expect(evaluateFilter(field("author.length"), doc)).toBeUndefined();
    expect(evaluateFilter(field("tags.0"), doc)).toBeUndefined();
    expect(getFieldPath({ a: undefined }, "a")).toBeUndefined();
  });

  test("literals decode convex JSON and the undefined marker", () => {
    expect(evaluateFilter(lit(5n), doc)).toBe(5n);
    expect(evaluateFilter(lit(undefined), doc)).toBeUndefined();
    expect(evaluateFilter(lit({ a: [1, null] }), doc)).toEqual({
      a: [1, null],
    });
  });
});

describe("comparisons", () => {
  test("each operator on same-type values", () => {
    const cases: [string, Value, boolean][] = [
      ["$eq", 5n, true],
      ["$neq", 5n, false],
      ["$lt", 6n, true],
      ["$lte", 5n, true],
      ["$gt", 5n, false],
      ["$gte", 5n, true],
      ["$gt", 4n, true],
      ["$lt", 5n, false],
    ];
    for (const [op, value, expected] of cases) {
      expect(
        filterMatches(bin(op, field("count"), lit(value)), doc),
        `${op} ${displayValue(value)}`,
      ).toBe(expected);
    }
  });

  test("int64 and float64 are different types", () => {
    expect(filterMatches(bin("$eq", lit(1n), lit(1)), doc)).toBe(false);
    expect(filterMatches(bin("$neq", lit(1n), lit(1)), doc)).toBe(true);
    // int64 sorts before every float64, whatever the magnitudes.
    expect(filterMatches(bin("$lt", lit(1000n), lit(-1000)), doc)).toBe(true);
  });

  test("cross-type ordering follows Convex's total order", () => {
    const ascending: (Value | undefined)[] = [
      undefined,
      null,
      -1n,
      -Infinity,
      1.5,
      false,
      true,
      "",
      "a",
      new ArrayBuffer(1),
      [],
      {},
    ];
    for (let i = 0; i + 1 < ascending.length; i++) {
      expect(
        filterMatches(
          bin("$lt", lit(ascending[i]), lit(ascending[i + 1])),
          doc,
        ),
      ).toBe(true);
      expect(
        filterMatches(
          bin("$gt", lit(ascending[i]), lit(ascending[i + 1])),
          doc,
        ),
      ).toBe(false);
    }
  });

  test("a missing field is less than null and equals only undefined", () => {
    expect(filterMatches(bin("$lt", field("missing"), lit(null)), doc)).toBe(
      true,
    );
    expect(filterMatches(bin("$lt", field("missing"), lit(0)), doc)).toBe(true);
    expect(filterMatches(bin("$eq", field("missing"), lit(null)), doc)).toBe(
      false,
    );
    expect(
      filterMatches(bin("$eq", field("missing"), lit(undefined)), doc),
    ).toBe(true);
    expect(filterMatches(bin("$neq", field("missing"), lit(2)), doc)).toBe(
      true,
    );
    expect(
      filterMatches(bin("$eq", field("nested.empty"), lit(undefined)), doc),
    ).toBe(false);
  });

  test("structural equality for arrays, objects and bytes", () => {
    expect(filterMatches(bin("$eq", field("tags"), lit(["a", "b"])), doc)).toBe(
      true,
    );
    expect(
      filterMatches(bin("$eq", field("nested.level"), lit({ deep: 3 })), doc),
    ).toBe(true);
    expect(
      filterMatches(bin("$eq", field("nested.level"), lit({ deep: 3n })), doc),
    ).toBe(false);
    expect(
      filterMatches(
        bin(
          "$eq",
          lit(Uint8Array.of(1, 2).buffer),
          lit(Uint8Array.of(1, 2).buffer),
        ),
        doc,
      ),
    ).toBe(true);
  });

  test("NaN equals NaN and -0 is below 0, as in index order", () => {
    expect(filterMatches(bin("$eq", lit(NaN), lit(NaN)), doc)).toBe(true);
    expect(filterMatches(bin("$lt", lit(-0), lit(0)), doc)).toBe(true);
  });
});

describe("arithmetic", () => {
  test("floats with floats", () => {
    expect(evaluateFilter(bin("$add", field("score"), lit(1)), doc)).toBe(3.5);
    expect(evaluateFilter(bin("$sub", field("score"), lit(1)), doc)).toBe(1.5);
    expect(evaluateFilter(bin("$mul", field("score"), lit(2)), doc)).toBe(5);
    expect(evaluateFilter(bin("$div", field("score"), lit(2)), doc)).toBe(1.25);
    expect(evaluateFilter(bin("$mod", lit(7.5), lit(2)), doc)).toBe(1.5);
    expect(evaluateFilter(bin("$div", lit(1), lit(0)), doc)).toBe(Infinity);
  });

  test("int64 with int64, truncating like Rust", () => {
    expect(evaluateFilter(bin("$add", field("count"), lit(1n)), doc)).toBe(6n);
    expect(evaluateFilter(bin("$sub", field("count"), lit(7n)), doc)).toBe(-2n);
    expect(evaluateFilter(bin("$mul", field("count"), lit(3n)), doc)).toBe(15n);
    expect(evaluateFilter(bin("$div", lit(-7n), lit(2n)), doc)).toBe(-3n);
    expect(evaluateFilter(bin("$mod", lit(-7n), lit(2n)), doc)).toBe(-1n);
  });

  test("the backend's own example evaluates to -6", () => {
    const expr = bin(
      "$div",
      {
        $neg: bin(
          "$add",
          bin("$mul", lit(3n), lit(5n)),
          bin("$sub", lit(5n), bin("$mod", lit(11n), lit(3n))),
        ),
      },
      lit(3n),
    );
    expect(evaluateFilter(expr, doc)).toBe(-6n);
  });

  test("int64 overflow wraps to 64 bits", () => {
    const max = 2n ** 63n - 1n;
    expect(evaluateFilter(bin("$add", lit(max), lit(1n)), doc)).toBe(
      -(2n ** 63n),
    );
    expect(evaluateFilter(bin("$mul", lit(max), lit(2n)), doc)).toBe(-2n);
    expect(evaluateFilter({ $neg: lit(-(2n ** 63n)) }, doc)).toBe(-(2n ** 63n));
  });

  test("int64 division by zero fails", () => {
    expect(() => evaluateFilter(bin("$div", lit(1n), lit(0n)), doc)).toThrow(
      "Cannot divide 1 (type Int64) by zero",
    );
    expect(() => evaluateFilter(bin("$mod", lit(1n), lit(0n)), doc)).toThrow(
      "Cannot mod 1 (type Int64) by zero",
    );
    expect(() =>
      evaluateFilter(bin("$div", lit(-(2n ** 63n)), lit(-1n)), doc),
    ).toThrow(/overflows int64/);
  });

  test("mixed and non-numeric operands fail with the backend's wording", () => {
    expect(() => evaluateFilter(bin("$add", lit(1), lit(1n)), doc)).toThrow(
      "Cannot add 1.0 (type Float64) and 1 (type Int64)",
    );
    expect(() =>
      evaluateFilter(bin("$sub", field("author"), lit(1)), doc),
    ).toThrow('Cannot subtract "ann" (type String) and 1.0 (type Float64)');
    expect(() =>
      evaluateFilter(bin("$mul", field("missing"), lit(2n)), doc),
    ).toThrow("Cannot multiply undefined (type undefined) and 2 (type Int64)");
    expect(() =>
      evaluateFilter(bin("$div", lit(null), lit(null)), doc),
    ).toThrow("Cannot divide null (type Null) and null (type Null)");
    expect(() => evaluateFilter(bin("$mod", lit(true), lit(1)), doc)).toThrow(
      "Cannot mod true (type Boolean) and 1.0 (type Float64)",
    );
  });

  test("negation", () => {
    expect(evaluateFilter({ $neg: field("count") }, doc)).toBe(-5n);
    expect(evaluateFilter({ $neg: field("score") }, doc)).toBe(-2.5);
    expect(Object.is(evaluateFilter({ $neg: lit(0) }, doc), -0)).toBe(true);
    expect(() => evaluateFilter({ $neg: field("author") }, doc)).toThrow(
      'Cannot negate "ann" (type String)',
    );
    expect(() => evaluateFilter({ $neg: field("missing") }, doc)).toThrow(
      "Cannot negate undefined (type undefined)",
    );
  });
});

describe("logic", () => {
  const t = lit(true);
  const f = lit(false);

  test("and, or, not over booleans", () => {
    for (let i = 0; i < 8; i++) {
      const [a, b, c] = [(i & 1) !== 0, (i & 2) !== 0, (i & 4) !== 0];
      expect(evaluateFilter({ $and: [lit(a), lit(b), lit(c)] }, doc)).toBe(
        a && b && c,
      );
      expect(evaluateFilter({ $or: [lit(a), lit(b), lit(c)] }, doc)).toBe(
        a || b || c,
      );
    }
    expect(evaluateFilter({ $not: t }, doc)).toBe(false);
    expect(evaluateFilter({ $not: f }, doc)).toBe(true);
    expect(evaluateFilter({ $and: [] }, doc)).toBe(true);
    expect(evaluateFilter({ $or: [] }, doc)).toBe(false);
  });

  test("non-boolean operands are errors", () => {
    expect(() => evaluateFilter({ $not: lit(1) }, doc)).toThrow(
      "Cannot use value 1.0 (type Float64) as a Boolean",
    );
    expect(() => evaluateFilter({ $and: [t, field("missing")] }, doc)).toThrow(
      "Cannot use value undefined (type undefined) as a Boolean",
    );
    expect(() => evaluateFilter({ $or: [f, lit("yes")] }, doc)).toThrow(
      'Cannot use value "yes" (type String) as a Boolean',
    );
  });

  test("and and or short-circuit before a bad operand", () => {
    expect(evaluateFilter({ $and: [f, lit(1)] }, doc)).toBe(false);
    expect(evaluateFilter({ $or: [t, lit(1)] }, doc)).toBe(true);
  });

  test("a realistic combined filter", () => {
    const expr = {
      $and: [
        bin("$eq", field("author"), lit("ann")),
        {
          $or: [
            bin("$gt", field("count"), lit(3n)),
            bin("$eq", field("done"), f),
          ],
        },
        { $not: bin("$eq", field("nested.level.deep"), lit(4)) },
      ],
    };
    expect(filterMatches(expr, doc)).toBe(true);
    expect(filterMatches(expr, { ...doc, author: "bob" })).toBe(false);
  });
});

describe("filterMatches", () => {
  test("is true or false for boolean results", () => {
    expect(filterMatches(lit(true), doc)).toBe(true);
    expect(filterMatches(field("done"), doc)).toBe(true);
    expect(filterMatches(lit(false), doc)).toBe(false);
  });

  test("throws when the filter does not produce a boolean, as the backend does", () => {
    expect(() => filterMatches(field("missing"), doc)).toThrow(
      "Cannot use value undefined (type undefined) as a Boolean",
    );
    expect(() => filterMatches(field("count"), doc)).toThrow(
      "Cannot use value 5 (type Int64) as a Boolean",
    );
  });
});

describe("malformed expressions", () => {
  test("unknown operators are refused", () => {
    expect(() =>
      evaluateFilter({ $xor: [lit(true), lit(false)] }, doc),
    ).toThrow("Unsupported filter operator: $xor");
    expect(() => evaluateFilter({ toString: [lit(1), lit(1)] }, doc)).toThrow(
      "Unsupported filter operator: toString",
    );
  });

  test("bad shapes are refused", () => {
    expect(() => evaluateFilter(null, doc)).toThrow(
      /Invalid filter expression/,
    );
    expect(() => evaluateFilter([], doc)).toThrow(/Invalid filter expression/);
    expect(() => evaluateFilter({}, doc)).toThrow(/Invalid filter expression/);
    expect(() => evaluateFilter({ $eq: [lit(1)], $neq: [] }, doc)).toThrow(
      /Invalid filter expression/,
    );
    expect(() => evaluateFilter({ $eq: [lit(1)] }, doc)).toThrow(
      /expected two operands/,
    );
    expect(() => evaluateFilter({ $and: lit(true) }, doc)).toThrow(
      /list of operands/,
    );
    expect(() => evaluateFilter({ $field: 1 }, doc)).toThrow(/Invalid \$field/);
  });
});
