/**
 * The client-message parser: a large frame parsed in pieces over several
 * turns gives exactly what parsing it whole gives, message or error.
 */
import { describe, expect, test, vi } from "vitest";
import {
  type ClientMessage,
  parseClientMessage,
  PARSE_PIECE_CHANGES,
  parseClientMessageInTurns,
  SCAN_PIECE_CHARS,
} from "./protocol.ts";

/** What parsing gives: the message, or the error's text. */
function whole(frame: string): ClientMessage | string {
  try {
    return parseClientMessage(frame);
  } catch (error) {
    return (error as Error).message;
  }
}

async function inTurns(
  frame: string,
): Promise<{ result: ClientMessage | string; turns: number }> {
  let turns = 0;
  const pace = (resume: () => void) => {
    turns++;
    setImmediate(resume);
  };
  try {
    return { result: await parseClientMessageInTurns(frame, pace), turns };
  } catch (error) {
    return { result: (error as Error).message, turns };
  }
}

/** Queries whose arguments hold what a scan of the text must step over. */
function modifications(count: number): object[] {
  return Array.from({ length: count }, (_, i) =>
    i % 5 === 4
      ? { type: "Remove", queryId: i - 4 }
      : {
          type: "Add",
          queryId: i,
          udfPath: "messages:list",
          args: [
            {
              text: `q${i} "quoted" \\ back ] } [ { , : é \u2028 \\"`,
              nested: { list: [1, [2, { x: "]" }]], empty: {} },
              modifications: [i],
            },
          ],
          journal: i % 2 === 0 ? null : `j${i}`,
        },
  );
}

const modify = (mods: object[], extra: object = {}) => ({
  type: "ModifyQuerySet",
  baseVersion: 3,
  newVersion: 4,
  modifications: mods,
  ...extra,
});

describe("parseClientMessageInTurns", () => {
  test("a large ModifyQuerySet comes back exactly as parsed whole, over several turns", async () => {
    for (const [count, frame] of [
      [3_500, JSON.stringify(modify(modifications(3_500)))],
      // Whitespace everywhere a client may put it.
      [2_100, JSON.stringify(modify(modifications(2_100)), null, 2)],
      [
        1_200,
        JSON.stringify(
          modify(modifications(1_200), { note: '"modifications":[1,2]' }),
        ),
      ],
    ] as const) {
      const parse = vi.spyOn(JSON, "parse");
      const { result, turns } = await inTurns(frame);
      const longest = Math.max(
        ...parse.mock.calls.map(([text]) => text.length),
      );
      parse.mockRestore();
      expect(typeof result).toBe("object");
      expect(result).toEqual(whole(frame));
      // Parsed in pieces (never the whole frame), each in a turn of
      // its own, after a scan of at most SCAN_PIECE_CHARS a turn.
      expect(longest).toBeLessThan(frame.length);
      const pieces = Math.ceil(count / PARSE_PIECE_CHANGES);
      expect(turns).toBeGreaterThanOrEqual(pieces + 1);
      expect(turns).toBeLessThanOrEqual(
        pieces + Math.ceil(frame.length / SCAN_PIECE_CHARS),
      );
    }
  });

  test("any frame it cannot take apart, and every malformed one, gives what parsing it whole gives", async () => {
    const mods = modifications(1_500);
    const bad = [...mods];
    bad[1_234] = { type: "Add", queryId: -1, udfPath: "x", args: [] };
    const badEarly = [...mods];
    badEarly[100] = { type: "Add", queryId: -1, udfPath: "x", args: [] };
    const valid = JSON.stringify(modify(mods));
    const frames = [
      JSON.stringify(modify([])),
      // The array before the type, two arrays (the last one counts), an escaped key.
      JSON.stringify({
        modifications: mods,
        type: "ModifyQuerySet",
        baseVersion: 3,
        newVersion: 4,
      }),
      JSON.stringify(modify(mods)).slice(0, -1) + ',"modifications":[]}',
      JSON.stringify(modify([])).replace(
        '"modifications":[]',
        `"modific\\u0061tions":${JSON.stringify(mods)}`,
      ),
      // Malformed: a change out of shape, bad versions, JSON cut short or broken inside.
      JSON.stringify(modify(bad)),
      JSON.stringify(modify(mods, { baseVersion: -1 })),
      valid.slice(0, valid.length - 1_000),
      valid.replace('"queryId":700,', '"queryId":700,,'),
      valid.replace('"queryId":700,', '"queryId":700 "x",'),
      // Out of shape early and not JSON later: not JSON, as whole.
      JSON.stringify(modify(badEarly)).replace(
        '"queryId":1400,',
        '"queryId":1400,,',
      ),
      // Not a ModifyQuerySet at all.
      JSON.stringify({
        type: "Mutation",
        requestId: 1,
        udfPath: "a:b",
        args: [mods],
      }),
    ];
    for (const frame of frames) {
      const { result } = await inTurns(frame);
      expect(result).toEqual(whole(frame));
    }
    // The malformed ones are refused, as whole: the same text.
    expect((await inTurns(frames[4])).result).toBe(
      "Malformed message: bad or missing queryId",
    );
    expect((await inTurns(frames[6])).result).toBe("Message is not valid JSON");
  });
});
