/**
 * The JSON text a function's result was parsed from, kept beside the parsed
 * value, so that sending it (a subscription's QueryUpdated) does not
 * stringify megabytes again: `JSON.stringify(JSON.parse(text))` is `text`
 * for the JSON the isolate writes (V8 on both sides, no whitespace).
 * Weakly held: an entry goes when its value does.
 *
 * Usage:
 *   const value = JSON.parse(text); rememberJson(value, text);
 *   const wire = jsonText(value);           // the same text, not serialized again
 */
import type { JSONValue } from "convex/values";

/** Below this, stringifying again costs less than remembering. */
const REMEMBERED_MIN_CHARS = 16 * 1024;

const texts = new WeakMap<object, string>();

export function rememberJson(value: JSONValue, text: string): void {
  if (
    typeof value === "object" &&
    value !== null &&
    text.length >= REMEMBERED_MIN_CHARS
  )
    texts.set(value, text);
}

/** The text `value` was parsed from, if it was kept (16 KiB or more). */
export function rememberedJson(value: JSONValue): string | undefined {
  return typeof value === "object" && value !== null
    ? texts.get(value)
    : undefined;
}

/** `JSON.stringify(value)`, from the text it was parsed from when that was kept. */
export function jsonText(value: JSONValue): string {
  return rememberedJson(value) ?? JSON.stringify(value);
}
