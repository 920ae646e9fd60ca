import { compareValues, convexToJson, type Value } from "convex/values";
import { describe, expect, test } from "vitest";
import {
  afterCursor,
  encodeKey,
  encodeValue,
  FULL_RANGE,
  intervalContains,
  rangeToInterval,
} from "./keys.ts";

const MAX_INT64 = (1n << 63n) - 1n;
const MIN_INT64 = -(1n << 63n);

// A small alphabet makes equal prefixes, equal values and empty ones common.
const STRINGS = [
  "",
  "a",
  "ab",
  "a\0",
  "\0",
  "b",
  "é",
  "\u{1F600}",
  "\uFFFD",
  "z",
];
const NUMBERS = [
  -Infinity,
  -1e300,
  -1,
  -Number.MIN_VALUE,
  -0,
  0,
  Number.MIN_VALUE,
  0.5,
  1,
  1e300,
  Infinity,
  NaN,
];
const BIGINTS = [
  MIN_INT64,
  MIN_INT64 + 1n,
  -1n,
  0n,
  1n,
  MAX_INT64 - 1n,
  MAX_INT64,
];

function pick<T>(values: readonly T[]): T {
  return values[Math.floor(Math.random() * values.length)];
}

function randomBytes(): ArrayBuffer {
  const bytes = new Uint8Array(Math.floor(Math.random() * 4));
  for (let i = 0; i < bytes.length; i++) bytes[i] = pick([0, 1, 0x7f, 0xff]);
  return bytes.buffer;
}

function randomValue(depth = 0): Value {
  const kind = Math.floor(Math.random() * (depth < 3 ? 9 : 7));
  switch (kind) {
    case 0:
      return null;
    case 1:
      return pick(BIGINTS);
    case 2:
      return pick(NUMBERS);
    case 3:
      return Math.random() < 0.5;
    case 4:
      return pick(STRINGS);
    case 5:
      return randomBytes();
    case 6:
      return Math.random() * 10 - 5;
    case 7:
      return Array.from({ length: Math.floor(Math.random() * 4) }, () =>
        randomValue(depth + 1),
      );
    default: {
      const object: Record<string, Value> = {};
      for (const field of ["a", "b", "c", "ab"]) {
        if (Math.random() < 0.4) object[field] = randomValue(depth + 1);
      }
      return object;
    }
  }
}

function randomKeyValue(): Value | undefined {
  return Math.random() < 0.1 ? undefined : randomValue();
}

const show = (v: Value | undefined) =>
  v === undefined ? "undefined" : JSON.stringify(convexToJson(v));

const sign = (n: number) => (n < 0 ? -1 : n > 0 ? 1 : 0);

describe("encodeKey sorts as compareValues", () => {
  test("randomized values of every type, nested arrays and objects", () => {
    for (let i = 0; i < 20_000; i++) {
      const a = randomKeyValue();
      const b = Math.random() < 0.1 ? a : randomKeyValue();
      const byBytes = sign(Buffer.compare(encodeValue(a), encodeValue(b)));
      expect(byBytes, `${show(a)} vs ${show(b)}`).toBe(
        sign(compareValues(a, b)),
      );
    }
  });

  test("the edge values in order", () => {
    const ordered: (Value | undefined)[] = [
      undefined,
      null,
      MIN_INT64,
      -1n,
      0n,
      MAX_INT64,
      -Infinity,
      -1,
      -0,
      0,
      1,
      Infinity,
      NaN,
      false,
      true,
      "",
      "\0",
      "a",
      "a\0",
      "ab",
      "\uFFFD",
      "\u{1F600}",
      new ArrayBuffer(0),
      new Uint8Array([0]).buffer,
      new Uint8Array([0, 0]).buffer,
      new Uint8Array([1]).buffer,
      [],
      [null],
      [null, null],
      [1n],
      {},
      { a: null },
      { a: null, b: null },
      { b: null },
    ];
    for (let i = 0; i + 1 < ordered.length; i++) {
      expect(compareValues(ordered[i], ordered[i + 1])).toBeLessThan(0);
      expect(
        Buffer.compare(encodeValue(ordered[i]), encodeValue(ordered[i + 1])),
        `${i}`,
      ).toBeLessThan(0);
    }
  });

  test("keys compare element by element, a prefix first", () => {
    for (let i = 0; i < 5_000; i++) {
      const length = Math.floor(Math.random() * 3);
      const a = Array.from({ length }, randomKeyValue);
      const b =
        Math.random() < 0.5
          ? [
              ...a.slice(0, Math.floor(Math.random() * (length + 1))),
              randomKeyValue(),
            ]
          : Array.from({ length }, randomKeyValue);
      let expected = 0;
      for (let j = 0; j < a.length && j < b.length && expected === 0; j++) {
        expected = sign(compareValues(a[j], b[j]));
      }
      if (expected === 0) expected = sign(a.length - b.length);
      expect(sign(Buffer.compare(encodeKey(a), encodeKey(b)))).toBe(expected);
    }
  });
});

describe("intervals", () => {
  test("a prefix range covers exactly the keys with that prefix", () => {
    for (let i = 0; i < 5_000; i++) {
      const prefix = [randomKeyValue()];
      const key = [
        Math.random() < 0.3 ? prefix[0] : randomKeyValue(),
        randomKeyValue(),
        randomKeyValue(),
      ];
      const c = compareValues(key[0], prefix[0]);
      const cases = [
        { inclusive: true, start: c >= 0, end: c <= 0 },
        { inclusive: false, start: c > 0, end: c < 0 },
      ];
      for (const { inclusive, start, end } of cases) {
        const from = rangeToInterval({
          start: { key: prefix, inclusive },
          end: { key: [], inclusive: true },
        });
        const to = rangeToInterval({
          start: { key: [], inclusive: true },
          end: { key: prefix, inclusive },
        });
        expect(intervalContains(from, encodeKey(key))).toBe(start);
        expect(intervalContains(to, encodeKey(key))).toBe(end);
      }
    }
  });

  test("a cursor leaves strictly later keys ascending and earlier ones descending", () => {
    const all = rangeToInterval(FULL_RANGE);
    const cursor = encodeKey(["m", 5, "id"]);
    const later = encodeKey(["m", 5, "id2"]);
    const earlier = encodeKey(["m", 4, "id9"]);
    const asc = afterCursor(all, "asc", cursor);
    const desc = afterCursor(all, "desc", cursor);
    expect(intervalContains(asc, cursor)).toBe(false);
    expect(intervalContains(asc, later)).toBe(true);
    expect(intervalContains(asc, earlier)).toBe(false);
    expect(intervalContains(desc, cursor)).toBe(false);
    expect(intervalContains(desc, earlier)).toBe(true);
    expect(intervalContains(desc, later)).toBe(false);
  });
});
