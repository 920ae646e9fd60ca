/**
 * Convex's per-transaction and per-value limits, with Convex's error text.
 *
 * - `UsageMeter`: one per transaction (nested calls share their caller's, as
 *   they share its transaction): documents and bytes read, index ranges read,
 *   documents and bytes written. Limits and text from convex-backend
 *   `crates/database/src/reads.rs` (`record_read_document`,
 *   `record_indexed_directly`) and `writes.rs` (`Writes::update`), knobs in
 *   `crates/common/src/knobs.rs` (`TRANSACTION_MAX_*`).
 * - `checkDocument`: what every written document must satisfy: 1 MiB, nesting
 *   16, 1,024 fields per object, 8,192 array elements, field-name rules
 *   (`crates/common/src/document.rs`, `crates/value/src/{object,array,size}.rs`,
 *   `crates/sync_types/src/identifier.rs`).
 * - `argumentsSizeError` / `resultSizeError`: 16 MiB each
 *   (`crates/isolate/src/environment/helpers/validation.rs`).
 * Sizes are Convex's `Size::size()` metric, not JSON length.
 *
 * Usage:
 *   tx.usage.readDocument(doc);   // each document a scan or get returns
 *   tx.usage.readRange(key);      // each index range or point read
 *   tx.usage.writeDocument(doc);  // each insert / patch / replace / delete
 */
import type { JSONValue, Value } from "convex/values";

export const TRANSACTION_MAX_READ_SIZE_ROWS = 32_000;
export const TRANSACTION_MAX_READ_SIZE_BYTES = 1 << 24;
export const TRANSACTION_MAX_READ_SET_INTERVALS = 4_096;
export const TRANSACTION_MAX_NUM_USER_WRITES = 16_000;
export const TRANSACTION_MAX_USER_WRITE_SIZE_BYTES = 1 << 24;
export const FUNCTION_MAX_ARGS_SIZE = 1 << 24;
export const FUNCTION_MAX_RESULT_SIZE = 1 << 24;
export const MAX_USER_SIZE = 1 << 20;
export const MAX_DOCUMENT_NESTING = 16;
export const MAX_OBJECT_FIELDS = 1_024;
export const MAX_ARRAY_LEN = 8_192;
export const MAX_FIELD_NAME_LENGTH = 1_024;

/** `reads.rs` `OVER_LIMIT_HELP`, appended to the read limits' messages. */
const OVER_LIMIT_HELP =
  "Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a selective index range expressions.";

/** A Convex limit that was hit; the message is Convex's. */
export class LimitError extends Error {
  constructor(
    /** Convex's short code (`ErrorMetadata::short_msg`), e.g. "TooManyReads". */
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "LimitError";
  }
}

export class UsageMeter {
  documentsRead = 0;
  bytesRead = 0;
  documentsWritten = 0;
  bytesWritten = 0;
  /** Distinct index ranges read: the same range read twice is one interval in Convex's read set. */
  readonly #ranges = new Set<string>();

  /** `enforce: false` counts without failing (the backend's own whole-table reads). */
  constructor(readonly enforce = true) {}

  get rangesRead(): number {
    return this.#ranges.size;
  }

  readRange(key: string): void {
    this.#ranges.add(key);
    if (
      this.enforce &&
      this.#ranges.size > TRANSACTION_MAX_READ_SET_INTERVALS
    ) {
      throw new LimitError(
        "TooManyReads",
        `Too many reads in a single function execution (limit: ${TRANSACTION_MAX_READ_SET_INTERVALS}). ${OVER_LIMIT_HELP}`,
      );
    }
  }

  /** Counted before the check, as Convex does, so the usage shows the read that failed. */
  readDocument(doc: Record<string, Value>): void {
    this.documentsRead++;
    this.bytesRead += valueSize(doc);
    if (!this.enforce) return;
    if (this.documentsRead > TRANSACTION_MAX_READ_SIZE_ROWS) {
      throw new LimitError(
        "TooManyDocumentsRead",
        `Too many documents read in a single function execution (limit: ${TRANSACTION_MAX_READ_SIZE_ROWS}). ${OVER_LIMIT_HELP}`,
      );
    }
    if (this.bytesRead > TRANSACTION_MAX_READ_SIZE_BYTES) {
      throw new LimitError(
        "TooManyBytesRead",
        `Too many bytes read in a single function execution (limit: ${TRANSACTION_MAX_READ_SIZE_BYTES} bytes). ${OVER_LIMIT_HELP}`,
      );
    }
  }

  /** A write of `doc` (null for a delete, which counts as a write of no bytes). */
  writeDocument(id: string, doc: Record<string, Value> | null): void {
    this.documentsWritten++;
    this.bytesWritten += id.length + 2 + (doc === null ? 0 : valueSize(doc));
    if (!this.enforce) return;
    if (this.documentsWritten > TRANSACTION_MAX_NUM_USER_WRITES) {
      throw new LimitError(
        "TooManyWrites",
        `Too many writes in a single function execution (limit: ${TRANSACTION_MAX_NUM_USER_WRITES})`,
      );
    }
    if (this.bytesWritten > TRANSACTION_MAX_USER_WRITE_SIZE_BYTES) {
      throw new LimitError(
        "TooManyBytesWritten",
        `Too many bytes written in a single function execution (limit: ${TRANSACTION_MAX_USER_WRITE_SIZE_BYTES} bytes)`,
      );
    }
  }
}

/**
 * A document about to be written: size, nesting, field counts, array lengths
 * and field names. `doc` includes `_id` and `_creationTime`.
 */
export function checkDocument(doc: Record<string, Value>): void {
  const nesting = checkValue(doc, true);
  if (nesting > MAX_DOCUMENT_NESTING) {
    throw new LimitError(
      "TooNested",
      `Document is too nested (nested ${nesting} levels deep > maximum nesting ${MAX_DOCUMENT_NESTING})`,
    );
  }
  const size = valueSize(doc);
  if (size > MAX_USER_SIZE) {
    throw new LimitError(
      "ValueTooLargeError",
      `Value is too large (${formatBinary(size)} > maximum size ${formatBinary(MAX_USER_SIZE)})`,
    );
  }
}

/** The message for arguments over 16 MiB, or null. */
export function argumentsSizeError(path: string, args: Value): string | null {
  const size = valueSize([args]);
  return size > FUNCTION_MAX_ARGS_SIZE
    ? `Arguments for ${path} are too large (actual: ${formatBinary(size)}, limit: ${formatBinary(FUNCTION_MAX_ARGS_SIZE)})`
    : null;
}

/**
 * The message for a return value over 16 MiB, or null; the value as the
 * isolate serialized it (Convex JSON), so that no decoded copy is needed.
 * With the `text` it was parsed from, a value whose text is too short to
 * reach the limit is not walked (`maxJsonValueSize`).
 */
export function resultSizeError(
  path: string,
  result: JSONValue,
  text?: string,
): string | null {
  if (
    text !== undefined &&
    maxJsonValueSize(text.length) <= FUNCTION_MAX_RESULT_SIZE
  )
    return null;
  const size = jsonValueSize(result);
  return size > FUNCTION_MAX_RESULT_SIZE
    ? `Function ${path} return value is too large (actual: ${formatBinary(size)}, limit: ${formatBinary(FUNCTION_MAX_RESULT_SIZE)})`
    : null;
}

/**
 * The most `jsonValueSize` can give for Convex JSON of `chars` UTF-16 units:
 * 4.5 bytes a character and 4.5 more. A number counts 9 for at least one
 * character, and two with the separator between array items (`[1,2]`: 5
 * characters, 20 bytes); a string's character at most 3 UTF-8 bytes; a
 * field's name, quotes, colon and comma 1 byte more than the name; the
 * special one-field objects less than their text. A 2.4 MiB page is then
 * not walked (4 ms) just to learn that it is under 16 MiB.
 */
export function maxJsonValueSize(chars: number): number {
  return 4.5 * chars + 4.5;
}

/**
 * `valueSize(jsonToConvex(json))` without decoding: Convex JSON encodes an
 * int64 as `{"$integer": base64}`, a special float as `{"$float": base64}`
 * and bytes as `{"$bytes": base64}`; no other object has a `$` field
 * (`convexToJson` refuses them), so a one-field object with such a name is
 * one of these.
 */
export function jsonValueSize(json: JSONValue): number {
  if (json === null) return 1;
  switch (typeof json) {
    case "boolean":
      return 1;
    case "number":
      return 9;
    case "string":
      return utf8Length(json) + 2;
    case "object": {
      if (Array.isArray(json)) {
        let size = 2;
        for (const item of json) size += jsonValueSize(item);
        return size;
      }
      let size = 2;
      let fields = 0;
      for (const field in json) {
        fields++;
        size += field.length + 1 + jsonValueSize(json[field]);
      }
      if (fields === 1) {
        if ("$integer" in json || "$float" in json) return 9;
        const bytes = json.$bytes;
        if (typeof bytes === "string") return base64Length(bytes) + 2;
      }
      return size;
    }
    default:
      return 1;
  }
}

/** The number of bytes a base64 string decodes to. */
function base64Length(base64: string): number {
  let padding = 0;
  if (base64.endsWith("==")) padding = 2;
  else if (base64.endsWith("=")) padding = 1;
  return Math.floor((base64.length * 3) / 4) - padding;
}

/**
 * Convex's `Size::size()` (`crates/value/src/size.rs`): one byte per type tag
 * and delimiter, 8 per number, object fields add their name and a separator.
 */
export function valueSize(value: Value | undefined): number {
  if (value === null || value === undefined) return 1;
  switch (typeof value) {
    case "boolean":
      return 1;
    case "number":
    case "bigint":
      return 9;
    case "string":
      return utf8Length(value) + 2;
    case "object": {
      if (value instanceof ArrayBuffer) return value.byteLength + 2;
      if (Array.isArray(value)) {
        let size = 2;
        for (const item of value) size += valueSize(item);
        return size;
      }
      let size = 2;
      for (const [field, item] of Object.entries(
        value as Record<string, Value | undefined>,
      )) {
        if (item === undefined) continue;
        size += field.length + 1 + valueSize(item);
      }
      return size;
    }
    default:
      return 1;
  }
}

/** Checks objects, arrays and field names below `value`; returns its nesting. */
function checkValue(value: Value, topLevel: boolean): number {
  if (value === null || typeof value !== "object") return 0;
  if (value instanceof ArrayBuffer) return 0;
  if (Array.isArray(value)) {
    if (value.length > MAX_ARRAY_LEN) {
      throw new LimitError(
        "ArrayTooLong",
        `Array length is too long (${value.length} > maximum length ${MAX_ARRAY_LEN})`,
      );
    }
    let deepest = 0;
    for (const item of value)
      deepest = Math.max(deepest, checkValue(item, false));
    return deepest + 1;
  }
  const fields = Object.entries(
    value as Record<string, Value | undefined>,
  ).filter((entry): entry is [string, Value] => entry[1] !== undefined);
  if (fields.length > MAX_OBJECT_FIELDS) {
    throw new LimitError(
      "TooManyFieldsError",
      `Object has too many fields (${fields.length} > maximum number ${MAX_OBJECT_FIELDS})`,
    );
  }
  let deepest = 0;
  for (const [field, item] of fields) {
    checkFieldName(field, topLevel);
    deepest = Math.max(deepest, checkValue(item, false));
  }
  return deepest + 1;
}

/** `check_valid_field_name` plus the document rule on `_` (`DocumentValidationError`). */
function checkFieldName(field: string, topLevel: boolean): void {
  if (field.startsWith("$")) {
    throw new LimitError(
      "InvalidFieldName",
      `Field name ${field} starts with '$', which is reserved.`,
    );
  }
  for (const char of field) {
    const code = char.codePointAt(0)!;
    if (code > 0x7e || code < 0x20) {
      throw new LimitError(
        "InvalidFieldName",
        `Field name ${field} has invalid character '${char}': Field names can only contain non-control ASCII characters`,
      );
    }
  }
  if (field.length > MAX_FIELD_NAME_LENGTH) {
    throw new LimitError(
      "InvalidFieldName",
      `Field name is too long (${field.length} > maximum ${MAX_FIELD_NAME_LENGTH})`,
    );
  }
  if (field.startsWith("_")) {
    if (topLevel && (field === "_id" || field === "_creationTime")) return;
    throw new LimitError(
      "InvalidDocumentError",
      topLevel
        ? `Field '${field}' starts with an underscore, which is only allowed for system fields like '_id'`
        : `Field '${field}' starts with an underscore, which is not allowed for nested fields`,
    );
  }
}

/**
 * A string's UTF-8 length, natively (a JS loop over a 1 MiB string took
 * milliseconds per read document). A lone surrogate counts as the 3 bytes of
 * the U+FFFD it becomes in UTF-8, as Convex's Rust strings hold it.
 */
function utf8Length(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/** humansize's `BINARY` format, which Convex's size messages use: "16 MiB", "1.01 MiB", "512 B". */
export function formatBinary(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const text = unit === 0 ? String(value) : String(Number(value.toFixed(2)));
  return `${text} ${units[unit]}`;
}
