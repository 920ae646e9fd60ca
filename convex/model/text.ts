/**
 * How names and message bodies are measured against `limits.ts`: in
 * user-perceived characters (grapheme clusters), so "👍🏽" or an "é" written
 * as e + U+0301 counts once. Pure, with no server imports: `src/` can use it
 * to show the same count the server enforces.
 *
 * ```ts
 * if (isLongerThan(body, MESSAGE_MAX_CHARS)) ...
 * ```
 */

/**
 * Graphemes alone do not bound the stored size: one cluster can carry any
 * number of combining marks. Twenty UTF-16 code units per character fits every
 * emoji sequence (the longest, such as a tag flag or a kiss with skin tones,
 * are under 20), keeps a 2,000-character body under 80 KB, and lets an
 * oversized input be refused before it is segmented.
 */
const MAX_CODE_UNITS_PER_CHAR = 20;

/**
 * The Convex runtime documents no `Intl` support
 * (docs.convex.dev/functions/runtimes), so without a segmenter characters are
 * counted as code points: never a surrogate pair as two.
 */
const graphemeSegmenter =
  typeof Intl !== "undefined" && typeof Intl.Segmenter === "function"
    ? new Intl.Segmenter("en", { granularity: "grapheme" })
    : null;

/** The number of user-perceived characters in `text`. */
export function countCharacters(text: string): number {
  if (graphemeSegmenter === null) {
    return [...text].length;
  }
  return Array.from(graphemeSegmenter.segment(text)).length;
}

/** Whether `text` is over a `*_MAX_CHARS` limit. */
export function isLongerThan(text: string, maxChars: number): boolean {
  return (
    text.length > maxChars * MAX_CODE_UNITS_PER_CHAR ||
    countCharacters(text) > maxChars
  );
}
