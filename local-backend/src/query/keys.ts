/**
 * Index keys as bytes: the one place that says how a key compares with another
 * key and with a range.
 *
 * `encodeKey` maps an index key (a document's values for the index fields,
 * `undefined` where a field is missing) to bytes whose unsigned lexicographic
 * order (`Buffer.compare`, SQLite's BLOB order) is exactly Convex's order of
 * values across types (convex 1.48 `values/compare.ts`, convex-backend
 * `crates/value/src/sorting.rs`): undefined < null < int64 < float64 < boolean
 * < string < bytes < array < object, strings by UTF-8 bytes (code points),
 * floats in IEEE total order with -0 before 0 and NaN by its sign bit, arrays
 * and objects element by element with the shorter first, objects by their
 * fields sorted by name. SQLite stores these keys as BLOBs and does range scans
 * on them (storage/sqliteStore.ts).
 *
 * Each value's encoding is self-delimiting and never starts with 0x00 or 0xFF,
 * so a key prefix `p` covers exactly the byte interval [enc(p), enc(p) ++ 0xFF).
 * A range over key prefixes (`KeyRange`, what `.withIndex` compiles to) becomes
 * one half-open byte interval, and a cursor narrows it by one comparison.
 *
 * Usage:
 *   const key = encodeKey(indexKey(doc, fields));
 *   const interval = rangeToInterval(range);     // { lo, hi }: lo <= key < hi
 *   intervalContains(interval, key);
 *   afterCursor(interval, "desc", cursorKey);    // the rest of a scan
 */
import type { Value } from "convex/values";

export type Order = "asc" | "desc";

/** A document's values for an index's fields, `undefined` where missing. */
export type IndexKey = (Value | undefined)[];

/**
 * Bounds on a key's prefix: a key is inside when its first `start.key.length`
 * values compare after `start.key` (or equal, if inclusive) and its first
 * `end.key.length` values compare before `end.key` (or equal, if inclusive).
 */
export type KeyRange = {
  start: { key: IndexKey; inclusive: boolean };
  end: { key: IndexKey; inclusive: boolean };
};

/** The whole range of an index. */
export const FULL_RANGE: KeyRange = {
  start: { key: [], inclusive: true },
  end: { key: [], inclusive: true },
};

/** Keys `k` with `lo <= k < hi`, compared as unsigned bytes. */
export type KeyInterval = { lo: Buffer; hi: Buffer };

// Type tags in Convex's order (`makeComparable` in convex 1.48 `compare.ts`).
const TAG_UNDEFINED = 0x08;
const TAG_NULL = 0x10;
const TAG_INT64 = 0x20;
const TAG_FLOAT64 = 0x30;
const TAG_FALSE = 0x40;
const TAG_TRUE = 0x41;
const TAG_STRING = 0x50;
const TAG_BYTES = 0x60;
const TAG_ARRAY = 0x70;
const TAG_OBJECT = 0x90;
/** Ends an array or object; below every tag, so the shorter sorts first. */
const END = 0x00;
/** Above every tag: `prefix ++ AFTER` is past every key starting with `prefix`. */
const AFTER = 0xff;
const AFTER_ALL = Buffer.from([AFTER]);

/** Encodes into one growing scratch buffer; `finish` copies the result out. */
class KeyWriter {
  static #scratch = Buffer.allocUnsafe(1024);
  #buf = KeyWriter.#scratch;
  #len = 0;

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(
      Math.max(this.#buf.length * 2, this.#len + n),
    );
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
    KeyWriter.#scratch = next;
  }

  byte(b: number): void {
    this.#reserve(1);
    this.#buf[this.#len++] = b;
  }

  /** Bytes with 0x00 escaped as 0x00 0xFF and ended by 0x00 0x01, so that a
   *  shorter string sorts before every longer one it is a prefix of. */
  escaped(bytes: Uint8Array): void {
    this.#reserve(bytes.length * 2 + 2);
    for (const b of bytes) {
      this.#buf[this.#len++] = b;
      if (b === 0) this.#buf[this.#len++] = 0xff;
    }
    this.#buf[this.#len++] = 0;
    this.#buf[this.#len++] = 1;
  }

  /** A string's UTF-8 bytes, escaped as `escaped` does. */
  string(value: string): void {
    this.#reserve(value.length * 6 + 2);
    const start = this.#len;
    const written = this.#buf.write(value, start, "utf8");
    if (this.#buf.subarray(start, start + written).includes(0)) {
      this.escaped(Buffer.from(value, "utf8"));
      return;
    }
    this.#len += written;
    this.#buf[this.#len++] = 0;
    this.#buf[this.#len++] = 1;
  }

  uint32(value: number): void {
    this.#reserve(4);
    this.#buf.writeUInt32BE(value >>> 0, this.#len);
    this.#len += 4;
  }

  value(v: Value | undefined): void {
    if (v === undefined) return this.byte(TAG_UNDEFINED);
    if (v === null) return this.byte(TAG_NULL);
    switch (typeof v) {
      case "bigint": {
        this.byte(TAG_INT64);
        // Flipping the sign bit makes two's complement sort as unsigned.
        const bits = BigInt.asUintN(64, v) ^ (1n << 63n);
        this.uint32(Number(bits >> 32n));
        return this.uint32(Number(bits & 0xffff_ffffn));
      }
      case "number": {
        this.byte(TAG_FLOAT64);
        FLOAT.setFloat64(0, v);
        const hi = FLOAT.getUint32(0);
        const lo = FLOAT.getUint32(4);
        // IEEE total order: negatives (sign set) flip all bits, the rest flip the sign.
        if (hi >>> 31 === 1) {
          this.uint32(~hi);
          return this.uint32(~lo);
        }
        this.uint32(hi ^ 0x8000_0000);
        return this.uint32(lo);
      }
      case "boolean":
        return this.byte(v ? TAG_TRUE : TAG_FALSE);
      case "string":
        this.byte(TAG_STRING);
        return this.string(v);
      default:
        break;
    }
    if (v instanceof ArrayBuffer) {
      this.byte(TAG_BYTES);
      return this.escaped(new Uint8Array(v));
    }
    if (Array.isArray(v)) {
      this.byte(TAG_ARRAY);
      for (const element of v) this.value(element);
      return this.byte(END);
    }
    if (typeof v === "object") {
      this.byte(TAG_OBJECT);
      // compare.ts sorts field names with the default sort; Convex field names
      // are ASCII, where that equals the UTF-8 order of the escaped names.
      const fields = Object.keys(v).sort();
      for (const field of fields) {
        this.string(field);
        this.value((v as Record<string, Value>)[field]);
      }
      return this.byte(END);
    }
    throw new Error(`Cannot encode ${String(v)} as an index key`);
  }

  finish(): Buffer {
    return Buffer.from(this.#buf.subarray(0, this.#len));
  }
}

const FLOAT = new DataView(new ArrayBuffer(8));

/** The bytes of an index key (or of a key prefix). */
export function encodeKey(key: IndexKey): Buffer {
  const writer = new KeyWriter();
  for (const value of key) writer.value(value);
  return writer.finish();
}

/** The bytes of one value, for fingerprints and tests. */
export function encodeValue(value: Value | undefined): Buffer {
  return encodeKey([value]);
}

/** Orders keys as Convex orders them (lexicographic over `compareValues`). */
export function compareKeyBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/** The interval of whole keys a prefix range covers. */
export function rangeToInterval(range: KeyRange): KeyInterval {
  const start = encodeKey(range.start.key);
  const end = encodeKey(range.end.key);
  return {
    lo: range.start.inclusive ? start : pastPrefix(start),
    hi: range.end.inclusive ? pastPrefix(end) : end,
  };
}

export function intervalContains(
  interval: KeyInterval,
  key: Uint8Array,
): boolean {
  return (
    Buffer.compare(key, interval.lo) >= 0 &&
    Buffer.compare(key, interval.hi) < 0
  );
}

/**
 * The part of `interval` a scan in `order` still has to read after `cursor`
 * (a whole key it already returned): strictly after it ascending, strictly
 * before it descending.
 */
export function afterCursor(
  interval: KeyInterval,
  order: Order,
  cursor: Uint8Array | undefined,
): KeyInterval {
  if (cursor === undefined) return interval;
  if (order === "asc") {
    // The smallest byte string greater than `cursor` is `cursor ++ 0x00`.
    const lo = Buffer.concat([cursor, Buffer.from([0])]);
    return Buffer.compare(lo, interval.lo) > 0
      ? { lo, hi: interval.hi }
      : interval;
  }
  const hi = Buffer.from(cursor);
  return Buffer.compare(hi, interval.hi) < 0
    ? { lo: interval.lo, hi }
    : interval;
}

/**
 * Whether a key a scan in `order` reached is beyond `limit` (a whole key):
 * later ascending, earlier descending.
 */
export function isPast(
  order: Order,
  key: Uint8Array,
  limit: Uint8Array,
): boolean {
  const c = Buffer.compare(key, limit);
  return order === "asc" ? c > 0 : c < 0;
}

/**
 * The keys a scan of `interval` in `order` has covered: up to and including
 * `lastKey` (the last key it returned), or all of `interval` once `done`; null
 * when it covered nothing yet.
 */
export function coveredInterval(
  interval: KeyInterval,
  order: Order,
  lastKey: Buffer | undefined,
  done: boolean,
): KeyInterval | null {
  let covered = interval;
  if (!done) {
    if (lastKey === undefined) return null;
    covered =
      order === "asc"
        ? { lo: interval.lo, hi: minKey(interval.hi, afterKey(lastKey)) }
        : { lo: maxKey(interval.lo, lastKey), hi: interval.hi };
  }
  return Buffer.compare(covered.lo, covered.hi) < 0 ? covered : null;
}

/** The smallest byte string greater than `key`. */
function afterKey(key: Uint8Array): Buffer {
  return Buffer.concat([key, Buffer.from([0])]);
}

const minKey = (a: Buffer, b: Buffer) => (Buffer.compare(a, b) <= 0 ? a : b);
const maxKey = (a: Buffer, b: Buffer) => (Buffer.compare(a, b) >= 0 ? a : b);

function pastPrefix(prefix: Buffer): Buffer {
  return prefix.length === 0 ? AFTER_ALL : Buffer.concat([prefix, AFTER_ALL]);
}
