import { describe, test, expect } from "vitest";
import { CommitTsPlaceholder, type JSONValue, type Value } from "convex/values";
import {
  decodeTs,
  decodeValue,
  decodeValueOrUndefined,
  displayValue,
  encodeTs,
  encodeValue,
  formatFloatJson,
  formatFloatRustDebug,
  isObjectValue,
  quoteRustDebug,
  valueTypeName,
} from "./wire.ts";

const MIN_INT64 = -(2n ** 63n);
const MAX_INT64 = 2n ** 63n - 1n;

function bytes(...values: number[]): ArrayBuffer {
  return Uint8Array.from(values).buffer;
}

function roundTrip(v: Value): Value {
  return decodeValue(JSON.parse(JSON.stringify(encodeValue(v))) as JSONValue);
}

describe("timestamps", () => {
  test("zero is the client's starting version", () => {
    expect(encodeTs(0n)).toBe("AAAAAAAAAAA=");
    expect(decodeTs("AAAAAAAAAAA=")).toBe(0n);
  });

  test("encode little-endian unsigned", () => {
    expect(encodeTs(1n)).toBe("AQAAAAAAAAA=");
    expect(encodeTs(2n ** 64n - 1n)).toBe("//////////8=");
  });

  test("round-trip across the u64 range", () => {
    const samples = [
      0n,
      1n,
      255n,
      256n,
      1_800_000_000_000_000_000n,
      2n ** 63n,
      2n ** 64n - 1n,
    ];
    for (const ts of samples) expect(decodeTs(encodeTs(ts))).toBe(ts);
  });

  test("decodes what a real backend sent", () => {
    expect(decodeTs("AJlwOzjO6xg=")).toBeGreaterThan(
      1_700_000_000_000_000_000n,
    );
  });

  test("refuse values outside u64", () => {
    expect(() => encodeTs(-1n)).toThrow(/unsigned 64-bit/);
    expect(() => encodeTs(2n ** 64n)).toThrow(/unsigned 64-bit/);
  });

  test("refuse malformed text", () => {
    for (const bad of [
      "",
      "AAAA",
      "AAAAAAAAAAA",
      "AAAAAAAAAAAA",
      "AAAAAAAAAA!=",
      "AAAAAAAAAAAAAAAA",
      "AAAAAAAAAAB=",
    ]) {
      expect(() => decodeTs(bad)).toThrow(/Invalid timestamp/);
    }
    expect(() => decodeTs(0 as unknown as string)).toThrow(/Invalid timestamp/);
  });
});

describe("values", () => {
  test("int64 round-trips at the edges", () => {
    for (const n of [0n, -1n, 1n, MAX_INT64, MIN_INT64]) {
      expect(roundTrip(n)).toBe(n);
    }
    expect(encodeValue(0n)).toEqual({ $integer: "AAAAAAAAAAA=" });
    expect(encodeValue(-1n)).toEqual({ $integer: "//////////8=" });
  });

  test("floats keep their special values", () => {
    expect(Number.isNaN(roundTrip(NaN))).toBe(true);
    expect(roundTrip(Infinity)).toBe(Infinity);
    expect(roundTrip(-Infinity)).toBe(-Infinity);
    expect(Object.is(roundTrip(-0), -0)).toBe(true);
    expect(roundTrip(1.5)).toBe(1.5);
    expect(encodeValue(1.5)).toBe(1.5);
    expect(encodeValue(-0)).toEqual({ $float: "AAAAAAAAAIA=" });
  });

  test("bytes round-trip", () => {
    const decoded = roundTrip(bytes(0, 1, 254, 255));
    expect(decoded).toBeInstanceOf(ArrayBuffer);
    expect([...new Uint8Array(decoded as ArrayBuffer)]).toEqual([
      0, 1, 254, 255,
    ]);
    expect(encodeValue(bytes(1, 2, 3))).toEqual({ $bytes: "AQID" });
  });

  test("nested objects are encoded with sorted keys", () => {
    const value = { b: [1n, { z: null, a: "x" }], a: true };
    const json = encodeValue(value);
    expect(JSON.stringify(json)).toBe(
      '{"a":true,"b":[{"$integer":"AQAAAAAAAAA="},{"a":"x","z":null}]}',
    );
    expect(roundTrip(value)).toEqual(value);
  });

  test("undefined literals decode to undefined", () => {
    expect(decodeValueOrUndefined({ $undefined: null })).toBeUndefined();
    expect(decodeValueOrUndefined(null)).toBeNull();
    expect(decodeValueOrUndefined({ $integer: "AQAAAAAAAAA=" })).toBe(1n);
    expect(() => decodeValueOrUndefined({ a: { $undefined: null } })).toThrow(
      /reserved/,
    );
    expect(() => decodeValueOrUndefined({ $undefined: 1 })).toThrow(
      /Malformed/,
    );
  });

  test("the commit-ts placeholder decodes", () => {
    expect(decodeValue({ $commitTs: null })).toBeInstanceOf(
      CommitTsPlaceholder,
    );
  });
});

describe("displayValue", () => {
  test("matches the backend's Display for each type", () => {
    expect(displayValue(undefined)).toBe("undefined");
    expect(displayValue(null)).toBe("null");
    expect(displayValue(1n)).toBe("1");
    expect(displayValue(-5n)).toBe("-5");
    expect(displayValue(1)).toBe("1.0");
    expect(displayValue(1.5)).toBe("1.5");
    expect(displayValue(true)).toBe("true");
    expect(displayValue("hi")).toBe('"hi"');
    expect(displayValue(bytes(1, 2, 3))).toBe('b"AQID"');
    expect(displayValue([1, "a"])).toBe('[1.0, "a"]');
    expect(displayValue({ b: 1n, a: { c: null }, skip: undefined })).toBe(
      "{a: {c: null}, b: 1}",
    );
  });

  test("floats print like Rust's Debug", () => {
    expect(formatFloatRustDebug(NaN)).toBe("NaN");
    expect(formatFloatRustDebug(Infinity)).toBe("inf");
    expect(formatFloatRustDebug(-Infinity)).toBe("-inf");
    expect(formatFloatRustDebug(-0)).toBe("-0.0");
    expect(formatFloatRustDebug(0)).toBe("0.0");
    expect(formatFloatRustDebug(-2)).toBe("-2.0");
    expect(formatFloatRustDebug(0.1)).toBe("0.1");
    expect(formatFloatRustDebug(1e15)).toBe("1000000000000000.0");
    expect(formatFloatRustDebug(1e16)).toBe("1e16");
    expect(formatFloatRustDebug(1.5e300)).toBe("1.5e300");
    expect(formatFloatRustDebug(0.0001)).toBe("0.0001");
    expect(formatFloatRustDebug(-0.00001)).toBe("-1e-5");
  });

  test("float literals print like serde_json", () => {
    expect(formatFloatJson(123)).toBe("123.0");
    expect(formatFloatJson(1.25)).toBe("1.25");
    expect(formatFloatJson(0.00001)).toBe("0.00001");
    expect(formatFloatJson(1e-6)).toBe("1e-6");
    expect(formatFloatJson(1e16)).toBe("1e16");
    expect(formatFloatJson(1.5e20)).toBe("1.5e20");
    expect(formatFloatJson(NaN)).toBe("<number>");
  });

  test("strings use Rust escapes", () => {
    expect(quoteRustDebug('a"b\\c\nd\te\r\0')).toBe(
      '"a\\"b\\\\c\\nd\\te\\r\\0"',
    );
    expect(quoteRustDebug("\u001b")).toBe('"\\u{1b}"');
    expect(quoteRustDebug("héllo ✓")).toBe('"héllo ✓"');
  });
});

describe("type helpers", () => {
  test("valueTypeName uses the backend's names", () => {
    expect(valueTypeName(undefined)).toBe("undefined");
    expect(valueTypeName(null)).toBe("Null");
    expect(valueTypeName(1n)).toBe("Int64");
    expect(valueTypeName(1)).toBe("Float64");
    expect(valueTypeName(false)).toBe("Boolean");
    expect(valueTypeName("")).toBe("String");
    expect(valueTypeName(bytes())).toBe("Bytes");
    expect(valueTypeName([])).toBe("Array");
    expect(valueTypeName({})).toBe("Object");
  });

  test("isObjectValue accepts only plain objects", () => {
    expect(isObjectValue({})).toBe(true);
    expect(isObjectValue([])).toBe(false);
    expect(isObjectValue(null)).toBe(false);
    expect(isObjectValue(bytes())).toBe(false);
    expect(isObjectValue(decodeValue({ $commitTs: null }))).toBe(false);
  });
});
