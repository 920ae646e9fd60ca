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
      for (const mod of m.modifications as unknown[]) {
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
