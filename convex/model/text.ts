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

/**
 * Segmenting costs time in proportion to the whole string at every step
 * (V8's `Intl.Segmenter` iterator: 2,000 graphemes of a 40,000-character
 * string took 0.3 s in Node, seconds in the backend), so text is segmented
 * in slices of this many code units, each cut at its last full grapheme.
 */
const SEGMENT_SLICE = 1_000;

/** The number of user-perceived characters in `text`, counting no further than `limit + 1`. */
function countUpTo(text: string, limit: number): number {
  if (graphemeSegmenter === null) {
    let count = 0;
    for (const _codePoint of text) if (++count > limit) break;
    return count;
  }
  let count = 0;
  let position = 0;
  while (position < text.length && count <= limit) {
    const end = Math.min(text.length, position + SEGMENT_SLICE);
    const segments = Array.from(
      graphemeSegmenter.segment(text.slice(position, end)),
    );
    if (end === text.length || segments.length === 1) {
      // The end of the text, or one cluster longer than a slice.
      count += segments.length;
      position = end;
    } else {
      // The last cluster may continue past the cut: count it with the next slice.
      count += segments.length - 1;
      position += segments[segments.length - 1].index;
    }
  }
  return count;
}

/** The number of user-perceived characters in `text`. */
export function countCharacters(text: string): number {
  return countUpTo(text, Infinity);
}

/**
 * Whether `text` is over a `*_MAX_CHARS` limit. Its cost is bounded by the
 * limit, not by the input.
 */
export function isLongerThan(text: string, maxChars: number): boolean {
  if (text.length <= maxChars) return false;
  if (text.length > maxChars * MAX_CODE_UNITS_PER_CHAR) return true;
  return countUpTo(text, maxChars) > maxChars;
}
