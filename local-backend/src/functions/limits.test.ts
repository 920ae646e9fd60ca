/**
 * Sizes as Convex counts them (`crates/value/src/size.rs`): a return value's
 * size is computed from its Convex JSON, without decoding it, and must be
 * exactly the decoded value's, since the 16 MiB limit's error quotes it.
 */
import {
  convexToJson,
  type JSONValue,
  jsonToConvex,
  type Value,
} from "convex/values";
import { describe, expect, test } from "vitest";
import {
  FUNCTION_MAX_RESULT_SIZE,
  jsonValueSize,
  maxJsonValueSize,
  resultSizeError,
  valueSize,
} from "./limits.ts";

const bytes = (length: number) =>
  new Uint8Array(Array.from({ length }, (_, i) => i % 256)).buffer;

const values: Value[] = [
  null,
  true,
  0,
  -1.5,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  -0,
  12n,
  -(2n ** 63n),
  "",
  "héllo wörld ✓ 😀",
  bytes(0),
  bytes(1),
  bytes(2),
  bytes(3),
  bytes(1000),
  [],
  [1, "two", 3n, null, [bytes(5)]],
  {},
  { a: 1, "long field name": { nested: [1n, bytes(7), { "field!": "😀" }] } },
  // One field named like no special encoding.
  { integer: 5 },
];

describe("jsonValueSize", () => {
  test.each(values.map((value) => [convexToJson(value)] as const))(
    "equals the decoded value's size for %j",
    (json) => {
      expect(jsonValueSize(json)).toBe(valueSize(jsonToConvex(json)));
    },
  );

  test("no value's size exceeds the bound its text length gives (results under it are not walked)", () => {
    const samples: JSONValue[] = [
      ...values.map((value) => convexToJson(value)),
      1,
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 0],
      [[1], [2], [], [3, 4]],
      "€".repeat(100),
      "😀".repeat(50),
      { a: 1, b: [1, 2], c: { d: 0 } },
      { "€": "€", x: [true, false, null] },
      Array.from({ length: 200 }, (_, i) => ({ k: i % 10 })),
      convexToJson([1n, 2n, 3n]),
      convexToJson([Number.NaN, -0, Infinity]),
      convexToJson({ b: bytes(3), c: bytes(0) }),
    ];
    let tightest = 0;
    for (const json of samples) {
      const size = jsonValueSize(json);
      const bound = maxJsonValueSize(JSON.stringify(json).length);
      expect(size, JSON.stringify(json)).toBeLessThanOrEqual(bound);
      tightest = Math.max(tightest, size / bound);
    }
    // The bound is reached (a lone digit, digits in an array): not loose.
    expect(tightest).toBe(1);
    const over = "x".repeat(FUNCTION_MAX_RESULT_SIZE - 1);
    expect(resultSizeError("big:get", over, JSON.stringify(over))).toMatch(
      /too large/,
    );
  });

  test("a return value over 16 MiB is refused with its size, one at the limit is not", () => {
    // A string of n ASCII characters counts n + 2.
    const at = "x".repeat(FUNCTION_MAX_RESULT_SIZE - 2);
    expect(resultSizeError("big:get", at)).toBeNull();
    expect(resultSizeError("big:get", at + "x")).toBe(
      "Function big:get return value is too large (actual: 16 MiB, limit: 16 MiB)",
    );
  });
});
