import { describe, test, expect } from "vitest";
import {
  FIRST_USER_TABLE_NUMBER,
  decodeId,
  encodeId,
  IdDecodeError,
  newInternalId,
  parseId,
} from "./ids.ts";

// The internal ID from convex-backend `id_v6.rs` `test_document_id_stability`.
function stabilityInternalId(): Uint8Array {
  const bytes = new Uint8Array(16);
  bytes[0] = 251;
  for (let i = 1; i < 16; i++) bytes[i] = (bytes[i - 1] * 251) & 0xff;
  return bytes;
}

const VECTOR = "z43zp6c3e75gkmz1kfwj6mbbx5sw281h";

describe("encodeId", () => {
  test("matches the real backend's stability vector", () => {
    expect(encodeId(1017, stabilityInternalId())).toBe(VECTOR);
  });

  test("has the documented lengths", () => {
    const internalId = newInternalId();
    expect(encodeId(FIRST_USER_TABLE_NUMBER, internalId)).toHaveLength(32);
    expect(encodeId(5, internalId)).toHaveLength(31);
    expect(encodeId(2 ** 32 - 1, internalId)).toHaveLength(37);
  });

  test("uses only the lowercase Crockford alphabet", () => {
    for (let i = 0; i < 50; i++) {
      expect(encodeId(FIRST_USER_TABLE_NUMBER + i, newInternalId())).toMatch(
        /^[0-9abcdefghjkmnpqrstvwxyz]+$/,
      );
    }
  });

  test("refuses bad table numbers and internal IDs", () => {
    expect(() => encodeId(0, newInternalId())).toThrow(/table number/);
    expect(() => encodeId(2 ** 32, newInternalId())).toThrow(/table number/);
    expect(() => encodeId(1.5, newInternalId())).toThrow(/table number/);
    expect(() => encodeId(10001, new Uint8Array(15))).toThrow(/16 bytes/);
  });
});

describe("decodeId", () => {
  test("decodes the stability vector", () => {
    const decoded = decodeId(VECTOR);
    expect(decoded?.tableNumber).toBe(1017);
    expect(decoded?.internalId).toEqual(stabilityInternalId());
  });

  test("round-trips random IDs across every VInt width", () => {
    const tableNumbers = [
      1,
      127,
      128,
      10001,
      16383,
      16384,
      2 ** 21,
      2 ** 28,
      2 ** 32 - 1,
    ];
    for (let i = 0; i < 200; i++) {
      tableNumbers.push(1 + Math.floor(Math.random() * (2 ** 32 - 1)));
    }
    for (const tableNumber of tableNumbers) {
      const internalId = newInternalId();
      const id = encodeId(tableNumber, internalId);
      expect(decodeId(id)).toEqual({ tableNumber, internalId });
    }
  });

  test("newInternalId gives 16 fresh random bytes", () => {
    const a = newInternalId();
    const b = newInternalId();
    expect(a).toHaveLength(16);
    expect(a).not.toEqual(b);
  });

  test("rejects wrong lengths", () => {
    expect(decodeId("")).toBeNull();
    expect(decodeId(VECTOR.slice(0, 30))).toBeNull();
    expect(decodeId(VECTOR + "0".repeat(6))).toBeNull();
    expect(decodeId("0".repeat(1000))).toBeNull();
  });

  test("rejects characters outside the alphabet", () => {
    for (const bad of ["i", "l", "o", "u", "Z", "-", "="]) {
      expect(decodeId(bad + VECTOR.slice(1))).toBeNull();
    }
    expect(decodeId(VECTOR.toUpperCase())).toBeNull();
  });

  test("rejects a corrupted checksum", () => {
    const internalId = newInternalId();
    const id = encodeId(FIRST_USER_TABLE_NUMBER, internalId);
    const flipped =
      id.slice(0, 10) + (id[10] === "0" ? "1" : "0") + id.slice(11);
    expect(decodeId(flipped)).toBeNull();
    const lastFlipped =
      id.slice(0, -2) + (id.at(-2) === "a" ? "b" : "a") + id.at(-1);
    expect(decodeId(lastFlipped)).toBeNull();
  });

  test("rejects table number zero even with a valid checksum", () => {
    const body = [0, ...stabilityInternalId()];
    const footer = fletcher16(body);
    const zeroTable = encodeBytes([...body, footer & 0xff, footer >> 8]);
    expect(zeroTable).toHaveLength(31);
    expect(decodeId(zeroTable)).toBeNull();
  });

  test("rejects trailing garbage that still fits the length bounds", () => {
    expect(decodeId(VECTOR + "0")).toBeNull();
    expect(decodeId(VECTOR + "00")).toBeNull();
    const shortTable = encodeId(5, stabilityInternalId());
    expect(decodeId(shortTable + "0")).toBeNull();
  });

  test("rejects a non-canonical last character that only changes padding bits", () => {
    const id = encodeId(5, stabilityInternalId());
    const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";
    const last = alphabet.indexOf(id.at(-1)!);
    const variant = id.slice(0, -1) + alphabet[last ^ 1];
    expect(decodeId(variant)).toBeNull();
    expect(decodeId(id)).not.toBeNull();
  });

  test("does not throw on the backend's regression string", () => {
    expect(decodeId("sssswsgggggggggsgcsssfafffsffks")).toBeNull();
  });
});

// A second base32 encoder, written from the Crockford definition, so the
// table-zero case does not depend on the module under test.
describe("parseId", () => {
  // VInt(1017) is [0xf9, 0x07]; the footer is two little-endian bytes.
  const body = [0xf9, 0x07, ...stabilityInternalId()];
  const withFooter = (footer: number) =>
    encodeBytes([...body, footer & 0xff, footer >> 8]);
  const reason = (id: string) => {
    const parsed = parseId(id);
    return parsed instanceof IdDecodeError ? parsed.message : "decoded";
  };

  test("decodes what encodeId wrote", () => {
    expect(withFooter(fletcher16(body))).toBe(VECTOR);
    expect(parseId(VECTOR)).toEqual({
      tableNumber: 1017,
      internalId: stabilityInternalId(),
    });
  });

  test("a footer of another version or a bad checksum is an invalid ID version, naming both footers", () => {
    const expected = fletcher16(body);
    expect(reason(withFooter(expected ^ 1))).toBe(
      `Unable to decode ID: Invalid ID version ${expected ^ 1} (expected ${expected})`,
    );
    const corrupted = [...body];
    corrupted[5] ^= 0x10;
    const id = encodeBytes([...corrupted, expected & 0xff, expected >> 8]);
    expect(reason(id)).toBe(
      `Unable to decode ID: Invalid ID version ${expected} (expected ${fletcher16(corrupted)})`,
    );
  });

  test("a wrong length names the length in UTF-8 bytes, as Rust's str::len", () => {
    expect(reason("not-an-id")).toBe(
      "Unable to decode ID: Invalid ID length 9",
    );
    expect(reason("é".repeat(20))).toBe(
      "Unable to decode ID: Invalid ID length 40",
    );
    expect(reason(VECTOR + "00")).toBe(
      "Unable to decode ID: Invalid ID length 34",
    );
    expect(reason(VECTOR + "0")).toBe(
      "Unable to decode ID: Invalid ID length 33",
    );
  });

  test("other characters are not base32; a zero or overlong table number is invalid", () => {
    expect(reason("!".repeat(32))).toBe(
      "Unable to decode ID: ID wasn't valid base32",
    );
    expect(reason(VECTOR.toUpperCase())).toBe(
      "Unable to decode ID: ID wasn't valid base32",
    );
    const zero = [0, ...stabilityInternalId()];
    const zeroFooter = fletcher16(zero);
    expect(
      reason(encodeBytes([...zero, zeroFooter & 0xff, zeroFooter >> 8])),
    ).toBe("Unable to decode ID: Invalid table number");
    const overlong = [0xff, 0xff, 0xff, 0xff, 0xff, ...stabilityInternalId()];
    expect(reason(encodeBytes([...overlong, 0, 0]))).toBe(
      "Unable to decode ID: Invalid table number",
    );
  });
});

function fletcher16(bytes: readonly number[]): number {
  let c0 = 0;
  let c1 = 0;
  for (const byte of bytes) {
    c0 = (c0 + byte) & 0xff;
    c1 = (c1 + c0) & 0xff;
  }
  return (c1 << 8) | c0;
}

function encodeBytes(bytes: number[]): string {
  const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";
  let bits = "";
  for (const byte of bytes) bits += byte.toString(2).padStart(8, "0");
  let out = "";
  for (let i = 0; i < bits.length; i += 5) {
    out += alphabet[parseInt(bits.slice(i, i + 5).padEnd(5, "0"), 2)];
  }
  return out;
}
