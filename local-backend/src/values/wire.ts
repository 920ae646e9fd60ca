/**
 * Wire and text forms of Convex values, in one place for the sync protocol,
 * the HTTP API, the query engine and error messages.
 *
 * - u64 timestamps (`Transition` versions, `MutationResponse.ts`,
 *   `maxObservedTimestamp`) travel as base64 of 8 little-endian bytes.
 * - Values use convex's own `convexToJson` / `jsonToConvex`; filter and index
 *   literals and patch values may also be `{"$undefined": null}`.
 * - `displayValue` prints a value the way the Rust backend's `Display` does,
 *   so error messages read like production ones.
 *
 * Usage:
 *   encodeTs(0n) === "AAAAAAAAAAA="
 *   decodeValueOrUndefined({ $undefined: null }) === undefined
 *   displayValue(1) === "1.0"
 */
import {
  CommitTsPlaceholder,
  convexToJson,
  jsonToConvex,
  type JSONValue,
  type Value,
} from "convex/values";

const TS_BYTES = 8;
const MAX_U64 = (1n << 64n) - 1n;
const BASE64_U64 = /^[A-Za-z0-9+/]{11}=$/;

/** A stored document: its fields plus the two system fields. */
export type Doc = { _id: string; _creationTime: number } & Record<
  string,
  Value
>;

export function encodeTs(ts: bigint): string {
  if (typeof ts !== "bigint" || ts < 0n || ts > MAX_U64) {
    throw new Error(
      `Timestamp ${String(ts)} is not an unsigned 64-bit integer`,
    );
  }
  const buf = Buffer.alloc(TS_BYTES);
  buf.writeBigUInt64LE(ts);
  return buf.toString("base64");
}

export function decodeTs(s: string): bigint {
  // Node's base64 decoder skips bad characters silently, so check the exact
  // shape first and then that the text is the canonical encoding.
  if (typeof s !== "string" || !BASE64_U64.test(s)) {
    throw new Error(
      `Invalid timestamp ${JSON.stringify(s)}: expected base64 of 8 little-endian bytes`,
    );
  }
  const buf = Buffer.from(s, "base64");
  if (buf.length !== TS_BYTES || buf.toString("base64") !== s) {
    throw new Error(
      `Invalid timestamp ${JSON.stringify(s)}: expected base64 of 8 little-endian bytes`,
    );
  }
  return buf.readBigUInt64LE();
}

export function encodeValue(v: Value): JSONValue {
  return convexToJson(v);
}

export function decodeValue(j: JSONValue): Value {
  return jsonToConvex(j);
}

/**
 * Decodes `convexOrUndefinedToJson` output (convex 1.48 `values/value.ts`):
 * filter literals, index-range bounds and top-level patch fields write a
 * missing value as `{"$undefined": null}`.
 */
export function decodeValueOrUndefined(j: JSONValue): Value | undefined {
  if (
    typeof j === "object" &&
    j !== null &&
    !Array.isArray(j) &&
    Object.keys(j).length === 1 &&
    "$undefined" in j
  ) {
    if (j.$undefined !== null) {
      throw new Error(`Malformed $undefined field: ${JSON.stringify(j)}`);
    }
    return undefined;
  }
  return jsonToConvex(j);
}

/** True for a Convex object value: not null, an array, bytes or the commit-ts placeholder. */
export function isObjectValue(
  v: Value | undefined,
): v is { [key: string]: Value | undefined } {
  return (
    typeof v === "object" &&
    v !== null &&
    !Array.isArray(v) &&
    !(v instanceof ArrayBuffer) &&
    !(v instanceof CommitTsPlaceholder)
  );
}

/**
 * The backend's type names (`ConvexValue::type_name`, and "undefined" for a
 * missing value in `MaybeValue::type_name`), as used in filter errors.
 */
export function valueTypeName(v: Value | undefined): string {
  if (v === undefined) return "undefined";
  if (v === null) return "Null";
  if (typeof v === "bigint" || v instanceof CommitTsPlaceholder) return "Int64";
  if (typeof v === "number") return "Float64";
  if (typeof v === "boolean") return "Boolean";
  if (typeof v === "string") return "String";
  if (v instanceof ArrayBuffer) return "Bytes";
  if (Array.isArray(v)) return "Array";
  return "Object";
}

/**
 * Prints a value like convex-backend `impl Display for ConvexValue`
 * (`crates/value/src/lib.rs`): int64 as plain digits, float64 with Rust's
 * `{:?}` (`1.0`, `NaN`, `inf`), strings quoted with Rust escapes, bytes as
 * `b"<base64>"`, objects as `{key: value, ...}` in key order, and a missing
 * value as `undefined` (`MaybeValue`).
 */
export function displayValue(v: Value | undefined): string {
  if (v === undefined) return "undefined";
  if (v === null) return "null";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return formatFloatRustDebug(v);
  if (typeof v === "boolean") return String(v);
  if (typeof v === "string") return quoteRustDebug(v);
  if (v instanceof ArrayBuffer) {
    return `b"${Buffer.from(v).toString("base64")}"`;
  }
  if (v instanceof CommitTsPlaceholder) return v.toString();
  if (Array.isArray(v)) return `[${v.map(displayValue).join(", ")}]`;
  const entries = Object.keys(v)
    .filter((key) => v[key] !== undefined)
    .sort(compareUtf8)
    .map((key) => `${key}: ${displayValue(v[key])}`);
  return `{${entries.join(", ")}}`;
}

// Field names are ASCII, but sort by code units rather than locale so the
// order matches the backend's `BTreeMap<FieldName, _>`.
function compareUtf8(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function shortestDigits(x: number): { digits: string; exponent: number } {
  const [mantissa, exp] = Math.abs(x).toExponential().split("e");
  return { digits: mantissa.replace(".", ""), exponent: Number(exp) };
}

function exponentForm(x: number): string {
  const { digits, exponent } = shortestDigits(x);
  const sign = x < 0 ? "-" : "";
  const mantissa =
    digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${mantissa}e${exponent}`;
}

/**
 * Rust's `{:?}` for f64: exponent form when the magnitude is below 1e-4 or at
 * least 1e16, otherwise a decimal that always has a fractional part.
 */
export function formatFloatRustDebug(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const abs = Math.abs(x);
  if (abs < 1e-4 || abs >= 1e16) return exponentForm(x);
  const plain = String(x);
  return plain.includes(".") ? plain : `${plain}.0`;
}

/**
 * serde_json's number form (ryu), used by the backend to print float
 * literals in `v.literal(...)`: integers up to 16 digits get `.0`, small
 * magnitudes down to 1e-5 are written out, the rest use an exponent.
 */
export function formatFloatJson(x: number): string {
  if (!Number.isFinite(x)) return "<number>";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const { digits, exponent } = shortestDigits(x);
  const sign = x < 0 ? "-" : "";
  const point = exponent + 1;
  if (digits.length <= point && point <= 16) {
    return `${sign}${digits}${"0".repeat(point - digits.length)}.0`;
  }
  if (point > 0 && point <= 16) {
    return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
  }
  if (point > -5 && point <= 0) {
    return `${sign}0.${"0".repeat(-point)}${digits}`;
  }
  return exponentForm(x);
}

/** Rust's `{:?}` for str: double quotes, backslash escapes, `\u{..}` for control characters. */
export function quoteRustDebug(s: string): string {
  let out = '"';
  for (const char of s) {
    const code = char.codePointAt(0)!;
    if (char === '"' || char === "\\") out += `\\${char}`;
    else if (char === "\n") out += "\\n";
    else if (char === "\r") out += "\\r";
    else if (char === "\t") out += "\\t";
    else if (code === 0) out += "\\0";
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) {
      out += `\\u{${code.toString(16)}}`;
    } else out += char;
  }
  return out + '"';
}

/**
 * Replaces every `db.vars.commitTs` placeholder in a value with the commit
 * timestamp, as the real backend does when a mutation commits (convex 1.48
 * `CommitTsPlaceholder`: "resolves to an int64 at commit"). Returns the same
 * object when there is nothing to replace.
 */
export function resolveCommitTs<T extends Value>(value: T, ts: bigint): T {
  if (value instanceof CommitTsPlaceholder) return ts as T;
  if (Array.isArray(value)) {
    const items = value.map((item) => resolveCommitTs(item, ts));
    return items.some((item, i) => item !== value[i]) ? (items as T) : value;
  }
  if (isObjectValue(value)) {
    let changed = false;
    const fields: Record<string, Value> = {};
    for (const [key, field] of Object.entries(value)) {
      if (field === undefined) continue;
      const resolved = resolveCommitTs(field, ts);
      changed ||= resolved !== field;
      fields[key] = resolved;
    }
    return changed ? (fields as T) : value;
  }
  return value;
}

/** `resolveCommitTs` for a value still in Convex JSON form (`{"$commitTs": null}`). */
export function resolveCommitTsJson(json: JSONValue, ts: bigint): JSONValue {
  if (!JSON.stringify(json).includes('"$commitTs"')) return json;
  return convexToJson(resolveCommitTs(jsonToConvex(json), ts));
}
