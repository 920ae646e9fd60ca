/**
 * Convex document IDs in the real backend's format (convex-backend
 * `crates/value/src/id_v6.rs` and `base32.rs`), so apps that store, compare or
 * pattern-match IDs see the same strings as in production.
 *
 * Binary layout: VInt(tableNumber) ++ internalId (16 bytes) ++ footer, where
 * footer = fletcher16(everything before it) XOR version 0, written as two
 * little-endian bytes. The text form is lowercase Crockford base32 without
 * padding, 31 to 37 characters; user tables (10001 and up) give 32.
 *
 * Usage:
 *   const id = encodeId(FIRST_USER_TABLE_NUMBER, newInternalId());
 *   const parts = decodeId(id); // { tableNumber, internalId } or null
 *   const parsed = parseId(id); // the same, or an IdDecodeError with Convex's text
 */
import { randomBytes } from "node:crypto";

/** Table numbers up to 10000 are reserved for system tables (`NUM_RESERVED_SYSTEM_TABLE_NUMBERS`). */
export const FIRST_USER_TABLE_NUMBER = 10001;

export const INTERNAL_ID_LENGTH = 16;

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
const MAX_TABLE_NUMBER = 0xffff_ffff;
const MAX_VINT_BYTES = 5;
const FOOTER_LENGTH = 2;
const VERSION = 0;

/** Character code -> 5-bit value, -1 outside the alphabet (codes from 128 too). */
const DECODE_TABLE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++)
  DECODE_TABLE[ALPHABET.charCodeAt(i)] = i;

function decodeChar(text: string, index: number): number {
  const code = text.charCodeAt(index);
  return code < 128 ? DECODE_TABLE[code] : -1;
}

function base32EncodedLength(byteLength: number): number {
  const lastChunk = [0, 2, 4, 5, 7][byteLength % 5];
  return Math.floor(byteLength / 5) * 8 + lastChunk;
}

const MIN_ID_LENGTH = base32EncodedLength(
  1 + INTERNAL_ID_LENGTH + FOOTER_LENGTH,
);
const MAX_ID_LENGTH = base32EncodedLength(
  MAX_VINT_BYTES + INTERNAL_ID_LENGTH + FOOTER_LENGTH,
);

// Same bit order as convex-backend `base32::encode`: each 5-byte block becomes
// eight 5-bit groups, most significant bits first; the zero-padded tail of
// the last block is cut off rather than padded with '='. (A bit buffer: every
// ID a mutation writes or checks goes through here.)
function base32Encode(data: Uint8Array): string {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (let i = 0; i < data.length; i++) {
    buffer = (buffer << 8) | data[i];
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(buffer >>> bits) & 0b11111];
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 0b11111];
  return out;
}

// Mirrors convex-backend `base32::decode`: it refuses any character outside
// the lowercase alphabet (no case folding, no i/l/o/u aliases) and ignores the
// unused low bits of the last character; `parseId` adds the canonical check.
function base32Decode(text: string): Uint8Array | null {
  const out = new Uint8Array(Math.floor((text.length * 5) / 8));
  let pos = 0;
  let buffer = 0;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const value = decodeChar(text, i);
    if (value < 0) return null;
    buffer = (buffer << 5) | value;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      if (pos < out.length) out[pos++] = (buffer >>> bits) & 0xff;
    }
    buffer &= (1 << bits) - 1;
  }
  return out;
}

function vintEncode(n: number): number[] {
  const out: number[] = [];
  let rest = n;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

// Like convex-backend `vint_decode`: at most five bytes, and bits past 32 are
// dropped (Rust's `u32 << 28` discards them), so `>>> 0` keeps the same value.
function vintDecode(
  buf: Uint8Array,
): { value: number; bytesRead: number } | null {
  let value = 0;
  for (let i = 0; i < MAX_VINT_BYTES; i++) {
    if (i >= buf.length) return null;
    const byte = buf[i];
    value = (value | ((byte & 0x7f) << (i * 7))) >>> 0;
    if (byte < 0x80) return { value, bytesRead: i + 1 };
  }
  return null;
}

function fletcher16(buf: Uint8Array, end = buf.length): number {
  let c0 = 0;
  let c1 = 0;
  for (let i = 0; i < end; i++) {
    c0 = (c0 + buf[i]) & 0xff;
    c1 = (c1 + c0) & 0xff;
  }
  return (c1 << 8) | c0;
}

export function encodeId(tableNumber: number, internalId: Uint8Array): string {
  if (
    !Number.isInteger(tableNumber) ||
    tableNumber < 1 ||
    tableNumber > MAX_TABLE_NUMBER
  ) {
    throw new Error(
      `Invalid table number ${tableNumber}: expected an integer from 1 to ${MAX_TABLE_NUMBER}`,
    );
  }
  if (internalId.length !== INTERNAL_ID_LENGTH) {
    throw new Error(
      `Invalid internal ID: expected ${INTERNAL_ID_LENGTH} bytes, got ${internalId.length}`,
    );
  }
  const vint = vintEncode(tableNumber);
  const bytes = new Uint8Array(
    vint.length + INTERNAL_ID_LENGTH + FOOTER_LENGTH,
  );
  bytes.set(vint);
  bytes.set(internalId, vint.length);
  const bodyLength = vint.length + INTERNAL_ID_LENGTH;
  const footer = fletcher16(bytes, bodyLength) ^ VERSION;
  bytes[bodyLength] = footer & 0xff;
  bytes[bodyLength + 1] = footer >> 8;
  return base32Encode(bytes);
}

/**
 * Why a string is not an ID, in convex-backend's words (`IdDecodeError` in
 * crates/value `id_v6.rs`): "Unable to decode ID: Invalid ID length 9",
 * "… ID wasn't valid base32", "… Invalid table number", or for a bad checksum
 * "… Invalid ID version 4660 (expected 22136)" (the footer read and the one
 * the rest of the ID gives; a wrong version and a wrong checksum are the same
 * mismatch).
 */
export class IdDecodeError extends Error {
  constructor(detail: string) {
    super(`Unable to decode ID: ${detail}`);
    this.name = "IdDecodeError";
  }
}

export type DecodedId = { tableNumber: number; internalId: Uint8Array };

/**
 * Parses an ID string, or says why it is not one. The checks run in
 * convex-backend `DocumentIdV6::decode` order: length first (so a huge string
 * fails fast; the length is in UTF-8 bytes, as Rust's `str::len`), then
 * base32, table number, footer, and that no byte is left over. One check is
 * stricter than the backend: the string must be the canonical encoding. The
 * backend also accepts a trailing character that only carries padding bits
 * (`id + "0"`), which would name the same document under a second string and
 * miss every string-keyed lookup here; such a string is refused as too long
 * or, at the canonical length, as not valid base32.
 */
export function parseId(id: string): DecodedId | IdDecodeError {
  const length = Buffer.byteLength(id, "utf8");
  const invalidLength = () => new IdDecodeError(`Invalid ID length ${length}`);
  if (length < MIN_ID_LENGTH || length > MAX_ID_LENGTH) return invalidLength();
  const buf = base32Decode(id);
  if (buf === null) return new IdDecodeError("ID wasn't valid base32");
  const vint = vintDecode(buf);
  if (vint === null || vint.value === 0)
    return new IdDecodeError("Invalid table number");
  let pos = vint.bytesRead;
  if (pos + INTERNAL_ID_LENGTH + FOOTER_LENGTH > buf.length)
    return invalidLength();
  const internalId = buf.slice(pos, pos + INTERNAL_ID_LENGTH);
  pos += INTERNAL_ID_LENGTH;
  const expectedFooter = fletcher16(buf, pos) ^ VERSION;
  const footer = buf[pos] | (buf[pos + 1] << 8);
  pos += FOOTER_LENGTH;
  if (footer !== expectedFooter)
    return new IdDecodeError(
      `Invalid ID version ${footer} (expected ${expectedFooter})`,
    );
  if (pos !== buf.length) return invalidLength();
  // Canonical: no character past the bytes' encoding, and the last one's
  // padding bits zero (what re-encoding the bytes and comparing would check).
  const canonicalLength = base32EncodedLength(buf.length);
  if (canonicalLength < id.length) return invalidLength();
  const paddingBits = canonicalLength * 5 - buf.length * 8;
  if ((decodeChar(id, id.length - 1) & ((1 << paddingBits) - 1)) !== 0)
    return new IdDecodeError("ID wasn't valid base32");
  return { tableNumber: vint.value, internalId };
}

/** `parseId` for callers that only need to know whether a string is an ID. */
export function decodeId(id: string): DecodedId | null {
  const parsed = parseId(id);
  return parsed instanceof IdDecodeError ? null : parsed;
}

/** Random bytes drawn 4 KiB at a time: one `randomBytes` call per 256 ids. */
let idPool = Buffer.alloc(0);
let idPoolOffset = 0;

export function newInternalId(): Uint8Array {
  if (idPoolOffset + INTERNAL_ID_LENGTH > idPool.length) {
    idPool = randomBytes(256 * INTERNAL_ID_LENGTH);
    idPoolOffset = 0;
  }
  const id = new Uint8Array(
    idPool.subarray(idPoolOffset, idPoolOffset + INTERNAL_ID_LENGTH),
  );
  idPoolOffset += INTERNAL_ID_LENGTH;
  return id;
}
