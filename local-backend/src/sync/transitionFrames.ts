/**
 * Where a Transition's bytes are built: once for every socket that sends the
 * same one, so a commit seen by N identical subscribers costs one
 * serialization (the shared result's, `outcomes.ts` `queryModification`), one UTF-8 encoding and
 * one frame, and per socket only a key of a few dozen characters and a map
 * lookup; `ws` then writes the same Buffer to every socket.
 *
 * Two sockets send the same bytes when their versions, their query ids, the
 * results they send and their clock skew are equal: the key names each
 * result by a serial number, never by its content, so a frame is only ever
 * shared between sockets sending the very same `SharedResult` object (one
 * identity's, one snapshot's). Frames that differ (another query id, another
 * skew) still share each result's encoded bytes, spliced between the
 * per-socket parts.
 *
 * Lifecycle of the cache: frames for one end ts at a time (a later ts clears
 * it), at most MAX_CACHED_BYTES (past that it starts over with the frame at
 * hand), so it never holds more than one commit's fan-out.
 *
 * Usage:
 *   const frame = frames.transition({ startVersion, endVersion, removed, updated, clientClockSkew });
 *   transport.send(frame);
 *   const large = await frames.transitionInTurns(parts, pace); // thousands of results
 */
import type { Pace } from "../functions/syscalls.ts";
import { encodeTs } from "../values/wire.ts";
import type { QueryModification } from "./outcomes.ts";
import type { QueryId, StateVersion } from "./protocol.ts";

/** The most bytes of frames kept for sharing (the newest frame is kept whatever its size). */
const MAX_CACHED_BYTES = 32 * 1024 * 1024;

/** Results `transitionInTurns` encodes in one turn (about 1.5 ms of 10,000 small ones). */
const TURN_QUERIES = 1_000;

/** A result's encoded modification shorter than this is spliced into a frame as text. */
const OWN_BUFFER_CHARS = 1024;

type Encoded = { serial: number; bytes: Buffer | null };

/** A version as the session holds it: ts as a bigint. */
export type SessionVersion = Omit<StateVersion, "ts"> & { ts: bigint };

export type TransitionParts = {
  startVersion: SessionVersion;
  endVersion: SessionVersion;
  removed: readonly QueryId[];
  /** Each a shared entry's result (`SharedResult`); its object identity names it in the key. */
  updated: readonly { queryId: QueryId; result: QueryModification }[];
  clientClockSkew: number | null;
};

export class TransitionFrames {
  #ts: bigint | null = null;
  readonly #frames = new Map<string, Buffer>();
  #cachedBytes = 0;
  /** Each result's encoded modification (`SharedResult.json`) and serial, made once. */
  readonly #encoded = new WeakMap<QueryModification, Encoded>();
  #serials = 0;
  /** The last two timestamps encoded: every socket's start and end. */
  readonly #tsMemo: [bigint, string][] = [];
  /**
   * The last frame asked for, with a copy of its parts: a room's sockets ask
   * for the same one back to back, and comparing the parts field by field
   * costs less than building the key (two versions, a string to hash).
   */
  #last: { parts: TransitionParts; frame: Buffer } | null = null;

  /** The Transition's frame (UTF-8 JSON); the same Buffer for every socket with the same parts. */
  transition(parts: TransitionParts): Buffer {
    const last = this.#last;
    if (last !== null && sameParts(last.parts, parts)) return last.frame;
    const frame = this.#frame(parts);
    this.#last = { parts: copyOf(parts), frame };
    return frame;
  }

  /**
   * The frame of a large Transition (thousands of results) as the fragments
   * of one WebSocket message (`Frame`), each encoded from TURN_QUERIES
   * results in a turn of its own (`pace`): a frame of 10,000 results took
   * 14-33 ms in one go, and joining the parts into one Buffer at the end
   * up to 20 ms more (bench/fairness.ts). Not shared with other sockets:
   * sockets holding the same thousands of queries are rare, and the key
   * would be as long.
   */
  async transitionInTurns(
    parts: TransitionParts,
    pace: Pace,
  ): Promise<Buffer[]> {
    const { head, tail } = this.#ends(parts);
    const fragments: Buffer[] = [];
    let turn: Buffer[] = [];
    for (const piece of this.#pieces(head, parts, tail, TURN_QUERIES)) {
      if (piece !== null) {
        turn.push(piece);
        continue;
      }
      fragments.push(Buffer.concat(turn));
      turn = [];
      await new Promise<void>((resume) => pace(resume));
    }
    fragments.push(Buffer.concat(turn));
    return fragments;
  }

  #frame(parts: TransitionParts): Buffer {
    const { endVersion } = parts;
    if (endVersion.ts !== this.#ts) this.#clear(endVersion.ts);
    const { head, tail } = this.#ends(parts);
    let key = head;
    for (const queryId of parts.removed) key += `r${queryId},`;
    for (const { queryId, result } of parts.updated)
      key += `${queryId}:${this.#encode(result).serial},`;
    key += tail;
    const cached = this.#frames.get(key);
    if (cached !== undefined) return cached;
    const chunks: Buffer[] = [];
    for (const piece of this.#pieces(head, parts, tail, Infinity))
      if (piece !== null) chunks.push(piece);
    const frame = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    if (this.#cachedBytes + frame.length > MAX_CACHED_BYTES)
      this.#clear(endVersion.ts);
    this.#frames.set(key, frame);
    this.#cachedBytes += frame.length;
    return frame;
  }

  #ends(parts: TransitionParts): { head: string; tail: string } {
    return {
      head:
        `{"type":"Transition","startVersion":${this.#version(parts.startVersion)}` +
        `,"endVersion":${this.#version(parts.endVersion)},"modifications":[`,
      tail:
        parts.clientClockSkew === null
          ? "]}"
          : `],"clientClockSkew":${parts.clientClockSkew}}`,
    };
  }

  /**
   * The frame's bytes in order: small results spliced into the text around
   * them, large ones as their own shared Buffer; a null after every
   * `perPause` results, where an encoder over several turns pauses.
   */
  *#pieces(
    head: string,
    parts: TransitionParts,
    tail: string,
    perPause: number,
  ): Generator<Buffer | null> {
    let text = head;
    let first = true;
    for (const queryId of parts.removed) {
      text += `${first ? "" : ","}{"type":"QueryRemoved","queryId":${queryId}}`;
      first = false;
    }
    let sincePause = 0;
    for (const { queryId, result } of parts.updated) {
      text += `${first ? "" : ","}{"queryId":${queryId},`;
      first = false;
      const { bytes } = this.#encode(result);
      if (bytes === null) text += result.json;
      else {
        yield Buffer.from(text);
        yield bytes;
        text = "";
      }
      if (++sincePause === perPause) {
        yield Buffer.from(text);
        text = "";
        sincePause = 0;
        yield null;
      }
    }
    yield Buffer.from(text + tail);
  }

  /**
   * A result's serial, and its UTF-8 bytes when it is large enough that
   * encoding it once for every socket that sends it is worth a Buffer of
   * its own; a small one is spliced into the frame's text (a Transition of
   * 10,000 small results encoded 20,000 Buffers, 25 ms).
   */
  #encode(result: QueryModification): Encoded {
    let encoded = this.#encoded.get(result);
    if (encoded === undefined) {
      encoded = {
        serial: this.#serials++,
        bytes:
          result.json.length < OWN_BUFFER_CHARS
            ? null
            : Buffer.from(result.json),
      };
      this.#encoded.set(result, encoded);
    }
    return encoded;
  }

  #version(version: SessionVersion): string {
    return `{"querySet":${version.querySet},"identity":${version.identity},"ts":"${this.#encodeTs(version.ts)}"}`;
  }

  #encodeTs(ts: bigint): string {
    for (const [memoTs, encoded] of this.#tsMemo)
      if (memoTs === ts) return encoded;
    const encoded = encodeTs(ts);
    this.#tsMemo.unshift([ts, encoded]);
    this.#tsMemo.length = Math.min(this.#tsMemo.length, 2);
    return encoded;
  }

  #clear(ts: bigint): void {
    this.#ts = ts;
    this.#frames.clear();
    this.#cachedBytes = 0;
  }
}

/** Whether two calls name the same frame: what the cache key spells out, compared directly. */
function sameParts(a: TransitionParts, b: TransitionParts): boolean {
  if (
    !sameVersion(a.startVersion, b.startVersion) ||
    !sameVersion(a.endVersion, b.endVersion) ||
    a.clientClockSkew !== b.clientClockSkew ||
    a.removed.length !== b.removed.length ||
    a.updated.length !== b.updated.length
  )
    return false;
  for (let i = 0; i < a.removed.length; i++)
    if (a.removed[i] !== b.removed[i]) return false;
  // A result is named by its object, as the key's serial does: never by content.
  for (let i = 0; i < a.updated.length; i++) {
    const x = a.updated[i];
    const y = b.updated[i];
    if (x.queryId !== y.queryId || x.result !== y.result) return false;
  }
  return true;
}

function sameVersion(a: SessionVersion, b: SessionVersion): boolean {
  return (
    a.querySet === b.querySet && a.identity === b.identity && a.ts === b.ts
  );
}

/** The parts as they are now (a caller's arrays and versions are its own). */
function copyOf(parts: TransitionParts): TransitionParts {
  return {
    startVersion: { ...parts.startVersion },
    endVersion: { ...parts.endVersion },
    removed: [...parts.removed],
    updated: parts.updated.map(({ queryId, result }) => ({ queryId, result })),
    clientClockSkew: parts.clientClockSkew,
  };
}
