/**
 * Transition frames: sockets sending the same Transition share one Buffer,
 * and a frame is only ever served to a socket whose versions, query ids,
 * results and clock skew it was built from.
 */
import { describe, expect, test } from "vitest";
import type { QueryModification } from "./outcomes.ts";
import type { ServerMessage } from "./protocol.ts";
import { type TransitionParts, TransitionFrames } from "./transitionFrames.ts";
import { encodeTs } from "../values/wire.ts";

/** A shared result as `queryModification` makes it (only `json` goes on the wire). */
function result(value: unknown): QueryModification {
  return {
    json: `"type":"QueryUpdated","value":${JSON.stringify(value)},"logLines":[],"journal":null}`,
    hash: JSON.stringify(value),
  };
}

const parse = (frame: Buffer) =>
  JSON.parse(frame.toString("utf8")) as ServerMessage;

function parts(overrides: Partial<TransitionParts> = {}): TransitionParts {
  return {
    startVersion: { querySet: 1, identity: 0, ts: 10n },
    endVersion: { querySet: 1, identity: 0, ts: 20n },
    removed: [],
    updated: [],
    clientClockSkew: null,
    ...overrides,
  };
}

describe("TransitionFrames", () => {
  test("a frame is the protocol's Transition, in the order and shape the client reads", () => {
    const frames = new TransitionFrames();
    const frame = frames.transition(
      parts({
        startVersion: { querySet: 1, identity: 0, ts: 10n },
        endVersion: { querySet: 2, identity: 1, ts: 20n },
        removed: [4, 5],
        updated: [
          { queryId: 7, result: result({ n: 1 }) },
          { queryId: 3, result: result(["é", "\u2028"]) },
        ],
        clientClockSkew: -12,
      }),
    );
    expect(parse(frame)).toEqual({
      type: "Transition",
      startVersion: { querySet: 1, identity: 0, ts: encodeTs(10n) },
      endVersion: { querySet: 2, identity: 1, ts: encodeTs(20n) },
      modifications: [
        { type: "QueryRemoved", queryId: 4 },
        { type: "QueryRemoved", queryId: 5 },
        {
          type: "QueryUpdated",
          queryId: 7,
          value: { n: 1 },
          logLines: [],
          journal: null,
        },
        {
          type: "QueryUpdated",
          queryId: 3,
          value: ["é", "\u2028"],
          logLines: [],
          journal: null,
        },
      ],
      clientClockSkew: -12,
    });
  });

  test("sockets sending the same result with the same versions share one Buffer", () => {
    const frames = new TransitionFrames();
    const shared = result({ messages: 30 });
    const first = frames.transition(
      parts({ updated: [{ queryId: 0, result: shared }] }),
    );
    const second = frames.transition(
      parts({ updated: [{ queryId: 0, result: shared }] }),
    );
    expect(second).toBe(first);
  });

  test("any part that differs gives that socket its own frame, with its own versions, ids, result and skew", () => {
    const frames = new TransitionFrames();
    const shared = result("shared");
    const base = parts({ updated: [{ queryId: 0, result: shared }] });
    const variants: TransitionParts[] = [
      base,
      { ...base, startVersion: { querySet: 0, identity: 0, ts: 0n } },
      { ...base, endVersion: { querySet: 1, identity: 1, ts: 20n } },
      { ...base, updated: [{ queryId: 1, result: shared }] },
      // Another identity's or snapshot's result, even with equal content.
      { ...base, updated: [{ queryId: 0, result: result("shared") }] },
      { ...base, updated: [{ queryId: 0, result: result("other") }] },
      { ...base, removed: [9] },
      { ...base, clientClockSkew: 5 },
    ];
    const built = variants.map((variant) => frames.transition(variant));
    expect(new Set(built).size).toBe(variants.length);
    for (const [i, variant] of variants.entries()) {
      const message = parse(built[i]) as Extract<
        ServerMessage,
        { type: "Transition" }
      >;
      expect(message.startVersion.identity).toBe(variant.startVersion.identity);
      expect(message.startVersion.ts).toBe(encodeTs(variant.startVersion.ts));
      expect(message.endVersion.identity).toBe(variant.endVersion.identity);
      expect(message.modifications.map((m) => m.queryId)).toEqual([
        ...variant.removed,
        ...variant.updated.map((u) => u.queryId),
      ]);
      expect(message.clientClockSkew).toBe(
        variant.clientClockSkew ?? undefined,
      );
    }
    expect(parse(built[5])).toMatchObject({
      modifications: [{ value: "other" }],
    });
  });

  test("a socket asking right after another, with one part different, gets its own frame", () => {
    const frames = new TransitionFrames();
    const shared = result("shared");
    const base = () =>
      parts({ removed: [2], updated: [{ queryId: 0, result: shared }] });
    const variants: TransitionParts[] = [
      { ...base(), startVersion: { querySet: 0, identity: 0, ts: 10n } },
      { ...base(), startVersion: { querySet: 1, identity: 1, ts: 10n } },
      { ...base(), startVersion: { querySet: 1, identity: 0, ts: 11n } },
      { ...base(), endVersion: { querySet: 2, identity: 0, ts: 20n } },
      { ...base(), endVersion: { querySet: 1, identity: 1, ts: 20n } },
      { ...base(), removed: [3] },
      { ...base(), removed: [] },
      { ...base(), updated: [{ queryId: 1, result: shared }] },
      { ...base(), updated: [{ queryId: 0, result: result("shared") }] },
      { ...base(), updated: [] },
      { ...base(), clientClockSkew: 0 },
    ];
    const baseFrame = frames.transition(base());
    for (const variant of variants) {
      const frame = frames.transition(variant);
      expect(frame).not.toBe(baseFrame);
      // And back: the base's own frame again, not the variant's.
      expect(frames.transition(base())).toBe(baseFrame);
    }
  });

  test("a frame does not change with the arrays a caller passed and reuses", () => {
    const frames = new TransitionFrames();
    const shared = result("v");
    const removed = [1];
    const updated = [{ queryId: 0, result: shared }];
    const first = frames.transition(parts({ removed, updated }));
    removed.push(2);
    updated[0] = { queryId: 5, result: shared };
    const second = frames.transition(parts({ removed, updated }));
    expect(second).not.toBe(first);
    expect(parse(second)).toMatchObject({
      modifications: [{ queryId: 1 }, { queryId: 2 }, { queryId: 5 }],
    });
  });

  test("a later commit's frames never reuse an earlier commit's", () => {
    const frames = new TransitionFrames();
    const shared = result("v");
    const atTwenty = frames.transition(
      parts({ updated: [{ queryId: 0, result: shared }] }),
    );
    const atThirty = frames.transition(
      parts({
        endVersion: { querySet: 1, identity: 0, ts: 30n },
        updated: [{ queryId: 0, result: shared }],
      }),
    );
    expect(atThirty).not.toBe(atTwenty);
    expect(parse(atThirty)).toMatchObject({
      endVersion: { ts: encodeTs(30n) },
    });
  });
});

describe("TransitionFrames.transitionInTurns", () => {
  test("a large Transition comes as fragments, one a turn, that joined are byte for byte the frame built in one go", async () => {
    const frames = new TransitionFrames();
    const many = parts({
      removed: [1, 2],
      // Small results are spliced as text, large ones (1 KiB and over) keep a Buffer of their own.
      updated: Array.from({ length: 2_500 }, (_, i) => ({
        queryId: 10 + i,
        result: result(i % 3 === 0 ? "é".repeat(700 + i) : { i }),
      })),
      clientClockSkew: 5,
    });
    let turns = 0;
    const fragments = await frames.transitionInTurns(many, (resume) => {
      turns++;
      setImmediate(resume);
    });
    expect(fragments.length).toBe(3);
    expect(turns).toBe(2);
    expect(Buffer.concat(fragments).equals(frames.transition(many))).toBe(true);
  });
});
