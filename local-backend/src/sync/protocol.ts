/**
 * The Convex sync protocol's wire messages, mirrored from convex 1.48
 * `src/browser/sync/protocol.ts` (keep in sync when upgrading convex), and a
 * strict parser for what clients send: a malformed frame becomes a
 * `ProtocolError`, which closes that one socket and nothing else.
 */
import type { JSONValue } from "convex/values";
import { decodeTs } from "../values/wire.ts";

export type QueryId = number & { __brand?: "QueryId" };
export type QuerySetVersion = number;
export type IdentityVersion = number;
export type RequestId = number & { __brand?: "RequestId" };
/** A u64 timestamp as base64 of 8 little-endian bytes. */
export type EncodedTs = string;

export type AddQuery = {
  type: "Add";
  queryId: QueryId;
  udfPath: string;
  args: JSONValue[];
  journal?: string | null;
  componentPath?: string;
};
export type RemoveQuery = { type: "Remove"; queryId: QueryId };

export type ClientMessage =
  | {
      type: "Connect";
      sessionId: string;
      connectionCount: number;
      lastCloseReason: string | null;
      maxObservedTimestamp?: EncodedTs;
      clientTs?: number;
    }
  | {
      type: "ModifyQuerySet";
      baseVersion: QuerySetVersion;
      newVersion: QuerySetVersion;
      modifications: (AddQuery | RemoveQuery)[];
    }
  | {
      type: "Mutation";
      requestId: RequestId;
      udfPath: string;
      args: JSONValue[];
      componentPath?: string;
    }
  | {
      type: "Action";
      requestId: RequestId;
      udfPath: string;
      args: JSONValue[];
      componentPath?: string;
    }
  | {
      type: "Authenticate";
      tokenType: "None" | "User" | "Admin";
      value?: string;
      baseVersion: IdentityVersion;
      /** Admin only: the user identity attributes to act as. */
      impersonating?: unknown;
    }
  | { type: "Event"; eventType: string; event: unknown };

export type StateVersion = {
  querySet: QuerySetVersion;
  identity: IdentityVersion;
  ts: EncodedTs;
};

export type StateModification =
  | {
      type: "QueryUpdated";
      queryId: QueryId;
      value: JSONValue;
      logLines: string[];
      journal: string | null;
    }
  | {
      type: "QueryFailed";
      queryId: QueryId;
      errorMessage: string;
      logLines: string[];
      errorData?: JSONValue;
      journal: string | null;
    }
  | { type: "QueryRemoved"; queryId: QueryId };

export type ServerMessage =
  | {
      type: "Transition";
      startVersion: StateVersion;
      endVersion: StateVersion;
      modifications: StateModification[];
      clientClockSkew?: number;
      serverTs?: number;
    }
  | {
      type: "MutationResponse";
      requestId: RequestId;
      success: true;
      result: JSONValue;
      ts: EncodedTs;
      logLines: string[];
    }
  | {
      type: "MutationResponse";
      requestId: RequestId;
      success: false;
      result: string;
      logLines: string[];
      errorData?: JSONValue;
    }
  | {
      type: "ActionResponse";
      requestId: RequestId;
      success: true;
      result: JSONValue;
      logLines: string[];
    }
  | {
      type: "ActionResponse";
      requestId: RequestId;
      success: false;
      result: string;
      logLines: string[];
      errorData?: JSONValue;
    }
  | {
      type: "AuthError";
      error: string;
      baseVersion: IdentityVersion;
      authUpdateAttempted: boolean;
    }
  | { type: "FatalError"; error: string }
  | { type: "Ping" };

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * The largest frame the sync endpoint reads. Well above Convex's 16 MiB
 * argument limit, so an oversized call arrives and fails with Convex's
 * "Arguments for … are too large" for that request while the socket stays
 * open; refusing the frame instead would close the socket, and the client
 * would reconnect and re-send it for ever (convex 1.48 `request_manager.ts`
 * re-sends every in-flight mutation on reconnect).
 */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/** Parses and checks one text frame from a client. */
export function parseClientMessage(frame: string): ClientMessage {
  if (frame.length > MAX_FRAME_BYTES) {
    throw new ProtocolError(
      `Message too large (${frame.length} characters; the limit is ${MAX_FRAME_BYTES})`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(frame);
  } catch {
    throw new ProtocolError("Message is not valid JSON");
  }
  if (!isObject(raw)) throw new ProtocolError("Message is not a JSON object");
  const m = raw;
  switch (m.type) {
    case "Connect":
      need(
        typeof m.sessionId === "string" &&
          m.sessionId.length > 0 &&
          m.sessionId.length <= 128,
        "Connect.sessionId",
      );
      need(isCount(m.connectionCount), "Connect.connectionCount");
      need(
        m.lastCloseReason === null || typeof m.lastCloseReason === "string",
        "Connect.lastCloseReason",
      );
      need(
        m.maxObservedTimestamp === undefined ||
          typeof m.maxObservedTimestamp === "string",
        "Connect.maxObservedTimestamp",
      );
      need(
        m.clientTs === undefined ||
          (typeof m.clientTs === "number" && Number.isFinite(m.clientTs)),
        "Connect.clientTs",
      );
      if (typeof m.maxObservedTimestamp === "string") {
        try {
          decodeTs(m.maxObservedTimestamp);
        } catch {
          throw new ProtocolError(
            "Malformed message: bad Connect.maxObservedTimestamp",
          );
        }
      }
      return m as ClientMessage;
    case "ModifyQuerySet":
      need(isCount(m.baseVersion), "ModifyQuerySet.baseVersion");
      need(isCount(m.newVersion), "ModifyQuerySet.newVersion");
      need(Array.isArray(m.modifications), "ModifyQuerySet.modifications");
      checkModificationCount(m.modifications.length);
      for (const mod of m.modifications as unknown[]) checkModification(mod);
      return m as ClientMessage;
    case "Mutation":
    case "Action":
      need(isCount(m.requestId), `${m.type}.requestId`);
      need(typeof m.udfPath === "string", `${m.type}.udfPath`);
      need(Array.isArray(m.args), `${m.type}.args`);
      need(
        m.componentPath === undefined || m.componentPath === "",
        `${m.type}.componentPath (only the app's functions can be called from a client)`,
      );
      return m as ClientMessage;
    case "Authenticate":
      need(
        m.tokenType === "None" ||
          m.tokenType === "User" ||
          m.tokenType === "Admin",
        "Authenticate.tokenType",
      );
      need(isCount(m.baseVersion), "Authenticate.baseVersion");
      need(
        m.tokenType === "None" || typeof m.value === "string",
        "Authenticate.value",
      );
      return m as ClientMessage;
    case "Event":
      return m as ClientMessage;
    default:
      throw new ProtocolError(`Unknown message type ${JSON.stringify(m.type)}`);
  }
}

function checkModification(mod: unknown): void {
  need(isObject(mod), "ModifyQuerySet modification");
  const q = mod;
  need(isCount(q.queryId), "queryId");
  if (q.type === "Add") {
    need(typeof q.udfPath === "string", "Add.udfPath");
    need(Array.isArray(q.args), "Add.args");
    need(
      q.journal === undefined ||
        q.journal === null ||
        typeof q.journal === "string",
      "Add.journal",
    );
    need(
      q.componentPath === undefined || q.componentPath === "",
      "Add.componentPath (only the app's functions can be called from a client)",
    );
  } else {
    need(q.type === "Remove", "modification type");
  }
}

/** Characters of a large frame scanned in one turn (`parseClientMessageInTurns`). */
export const SCAN_PIECE_CHARS = 128 * 1024;
/**
 * Query-set changes one ModifyQuerySet may carry. A 64 MiB frame holds 33
 * million tiny array elements, each of which the parse made an object of:
 * one such frame took the process from 131 MB to 4.5 GB for 15 s, two at
 * once past its heap limit. The official client sends one change per
 * query it adds or removes, and a frame of 500,000 real ones is most of
 * the 64 MiB; 50 times the largest query set the benchmarks hold (10,000
 * subscriptions on one socket).
 */
export const MAX_MODIFICATIONS = 500_000;

function checkModificationCount(count: number): void {
  if (count > MAX_MODIFICATIONS)
    throw new ProtocolError(
      `ModifyQuerySet carries more than ${MAX_MODIFICATIONS} modifications, the most one message may`,
    );
}
/** Query-set changes parsed and checked in one turn (`parseClientMessageInTurns`). */
export const PARSE_PIECE_CHANGES = 1_000;

/**
 * `parseClientMessage` for a large frame, in pieces, each in a turn of its
 * own (`pace`): a ModifyQuerySet's `modifications` array is found by a
 * scan of the text (strings and nesting tracked, SCAN_PIECE_CHARS a turn),
 * and parsed PARSE_PIECE_CHANGES changes a turn, then checked; the rest of
 * the message is parsed with the array left empty. One of 10,000 queries
 * (1.3 MB) took 15-23 ms in one go (bench/fairness.ts). The result, and
 * the error for a frame that is not a valid message, are exactly
 * `parseClientMessage`'s (one with more than MAX_MODIFICATIONS is refused
 * as soon as the scan counts them, whatever else is wrong with it): any
 * other message, a frame whose array it cannot
 * place (a second `modifications` key, an escaped one) or one that fails to
 * parse in pieces is parsed whole.
 */
export async function parseClientMessageInTurns(
  frame: string,
  pace: (resume: () => void) => void,
): Promise<ClientMessage> {
  const turn = () => new Promise<void>((resume) => pace(resume));
  // The official client writes `type` first; any other message goes whole.
  if (
    frame.length > MAX_FRAME_BYTES ||
    !frame.slice(0, 64).includes('"ModifyQuerySet"')
  )
    return parseClientMessage(frame);
  const found = await modificationsArray(frame, turn);
  if (found === null) return parseClientMessage(frame);
  let message: Record<string, unknown>;
  const modifications: unknown[] = [];
  try {
    const rest = JSON.parse(
      frame.slice(0, found.start) + "[]" + frame.slice(found.end),
    ) as unknown;
    if (
      !isObject(rest) ||
      rest.type !== "ModifyQuerySet" ||
      !Array.isArray(rest.modifications) ||
      rest.modifications.length !== 0
    )
      return parseClientMessage(frame);
    message = rest;
    const { elements } = found;
    for (let i = 0; i < elements.length; i += PARSE_PIECE_CHANGES) {
      await turn();
      const last = Math.min(elements.length, i + PARSE_PIECE_CHANGES) - 1;
      const piece = JSON.parse(
        `[${frame.slice(elements[i][0], elements[last][1])}]`,
      ) as unknown[];
      if (piece.length !== last - i + 1) return parseClientMessage(frame);
      for (const mod of piece) modifications.push(mod);
    }
  } catch {
    // Not JSON after all: the whole parse says so, in its words.
    return parseClientMessage(frame);
  }
  // Checked once all of it parsed, in the whole parse's order, so a frame
  // both malformed and not JSON gets the same error (a few ms for 10,000).
  need(isCount(message.baseVersion), "ModifyQuerySet.baseVersion");
  need(isCount(message.newVersion), "ModifyQuerySet.newVersion");
  for (const mod of modifications) checkModification(mod);
  message.modifications = modifications;
  return message as ClientMessage;
}

/**
 * Where the top-level `modifications` array of a JSON object's text is
 * (`start` at its `[`, `end` after its `]`) and its elements' extents, or
 * null when the text does not have exactly one such key at the top level.
 * Scans SCAN_PIECE_CHARS characters between `turn`s.
 */
async function modificationsArray(
  text: string,
  turn: () => Promise<void>,
): Promise<{
  start: number;
  end: number;
  elements: [number, number][];
} | null> {
  const KEY = '"modifications"';
  let depth = 0;
  let start = -1;
  let end = -1;
  let keys = 0;
  /** Inside the array: where the element being read started, or -1. */
  let element = -1;
  const elements: [number, number][] = [];
  // Nothing of it in the turn that received the frame.
  let pieceEnd = 0;
  for (let i = 0; i < text.length; i++) {
    if (i >= pieceEnd) {
      await turn();
      pieceEnd = i + SCAN_PIECE_CHARS;
    }
    const c = text.charCodeAt(i);
    const inArray = start !== -1 && end === -1;
    if (inArray && depth === 2 && element === -1 && c > 0x20 && c !== 0x5d)
      element = i;
    switch (c) {
      case 0x22: {
        // "
        if (depth === 1 && text.startsWith(KEY, i)) {
          let j = i + KEY.length;
          while (j < text.length && text.charCodeAt(j) <= 0x20) j++;
          if (text.charCodeAt(j) === 0x3a) {
            j++;
            while (j < text.length && text.charCodeAt(j) <= 0x20) j++;
            if (++keys > 1 || text.charCodeAt(j) !== 0x5b) return null;
            start = j;
            depth = 2;
            i = j;
            continue;
          }
        }
        // A string: on to its closing quote, one not escaped by an odd run
        // of backslashes, found by `indexOf` (most of a frame is strings).
        let close = i;
        for (;;) {
          close = text.indexOf('"', close + 1);
          if (close === -1) return null;
          let backslashes = 0;
          while (text.charCodeAt(close - 1 - backslashes) === 0x5c)
            backslashes++;
          if (backslashes % 2 === 0) break;
        }
        i = close;
        break;
      }
      case 0x7b: // {
      case 0x5b: // [
        depth++;
        break;
      case 0x7d: // }
      case 0x5d: // ]
        if (inArray && depth === 2) {
          if (element !== -1) elements.push([element, i]);
          element = -1;
          end = i + 1;
        }
        depth--;
        break;
      case 0x2c: // ,
        if (inArray && depth === 2) {
          if (element === -1) return null;
          elements.push([element, i]);
          element = -1;
          // Refused before it costs memory (the whole parse refuses it too).
          checkModificationCount(elements.length);
        }
        break;
    }
  }
  return start === -1 || end === -1 ? null : { start, end, elements };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function need(condition: boolean, what: string): asserts condition {
  if (!condition)
    throw new ProtocolError(`Malformed message: bad or missing ${what}`);
}
