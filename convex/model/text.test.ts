import { expect, test } from "vitest";
import { countCharacters, isLongerThan } from "./text";

test("countCharacters counts what a reader sees as one character once", () => {
  expect(countCharacters("")).toBe(0);
  expect(countCharacters("abc")).toBe(3);
  expect(countCharacters("😀")).toBe(1);
  expect(countCharacters("👩🏻‍❤️‍💋‍👨🏼")).toBe(1);
  expect(countCharacters("🇫🇷🇩🇪")).toBe(2);
  expect(countCharacters("e\u0301")).toBe(1);
  expect(countCharacters("한국어")).toBe(3);
});

test("isLongerThan compares against the limit inclusively", () => {
  expect(isLongerThan("abc", 3)).toBe(false);
  expect(isLongerThan("abcd", 3)).toBe(true);
  expect(isLongerThan("🏴󠁧󠁢󠁳󠁣󠁴󠁿".repeat(3), 3)).toBe(false);
});

test("isLongerThan refuses a few characters carrying many combining marks", () => {
  expect(isLongerThan(`a${"\u0301".repeat(59)}`, 3)).toBe(false);
  expect(isLongerThan(`a${"\u0301".repeat(60)}`, 3)).toBe(true);
});

test("a character that straddles a segmentation slice counts once", () => {
  // Text is segmented 1,000 code units at a time (`SEGMENT_SLICE`).
  expect(countCharacters(`${"a".repeat(999)}e\u0301`)).toBe(1_000);
  expect(countCharacters(`${"a".repeat(995)}👩🏻‍❤️‍💋‍👨🏼b`)).toBe(997);
  expect(countCharacters("é".repeat(40_000))).toBe(40_000);
  expect(isLongerThan(`${"a".repeat(1_999)}👍🏽`, 2_000)).toBe(false);
  expect(isLongerThan(`${"a".repeat(2_000)}👍🏽`, 2_000)).toBe(true);
});
