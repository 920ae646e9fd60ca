/**
 * How a function outcome goes on the wire, in one place: the sync protocol's
 * MutationResponse and ActionResponse, a subscription's QueryUpdated or
 * QueryFailed (pre-serialized, with its dedup hash), and the HTTP API's
 * response body.
 *
 * Why here: the protocol's message types live in `sync/protocol.ts`, and the
 * HTTP layer sits above sync (values -> query -> storage -> functions -> sync
 * -> http), so sync is the lowest layer that knows every shape; http imports
 * this module. What a failure *says* (its message, trace, the client's
 * "[Request ID: …] Server Error" text, an HTTP action's error body) is the
 * functions layer's, `functions/errors.ts`; this module only frames it.
 *
 * Usage:
 *   session.send(mutationResponse(requestId, outcome));
 *   const { status, body } = httpFunctionResponse(outcome);
 */
import { createHash } from "node:crypto";
import type {
  FunctionFailure,
  FunctionOutcome,
  MutationOutcome,
  QueryOutcome,
} from "../functions/functionRunner.ts";
import { encodeTs } from "../values/wire.ts";
import { jsonText } from "../values/serialized.ts";
import type { RequestId, ServerMessage } from "./protocol.ts";

/** convex 1.48 `http_client.ts` `STATUS_CODE_UDF_FAILED`. */
export const STATUS_UDF_FAILED = 560;

/** The failure fields MutationResponse and ActionResponse share; `errorData` only for ConvexError. */
function responseFailure(outcome: FunctionFailure) {
  return {
    success: false as const,
    result: outcome.errorMessage,
    logLines: outcome.logLines,
    ...(outcome.errorData !== undefined
      ? { errorData: outcome.errorData }
      : {}),
  };
}

/** A mutation's answer; a success carries its commit ts, which the client waits to see in a Transition. */
export function mutationResponse(
  requestId: RequestId,
  outcome: MutationOutcome,
): ServerMessage {
  return outcome.status === "success"
    ? {
        type: "MutationResponse",
        requestId,
        success: true,
        result: outcome.value,
        ts: encodeTs(outcome.ts!),
        logLines: outcome.logLines,
      }
    : { type: "MutationResponse", requestId, ...responseFailure(outcome) };
}

export function actionResponse(
  requestId: RequestId,
  outcome: FunctionOutcome,
): ServerMessage {
  return outcome.status === "success"
    ? {
        type: "ActionResponse",
        requestId,
        success: true,
        result: outcome.value,
        logLines: outcome.logLines,
      }
    : { type: "ActionResponse", requestId, ...responseFailure(outcome) };
}

export type QueryModification = {
  /**
   * The QueryUpdated/QueryFailed modification as JSON without its `queryId`
   * and opening brace: a socket writes `{"queryId":7,` before it, so one
   * serialization serves every subscriber.
   */
  json: string;
  /**
   * What decides whether a result is sent again: the value and log lines, or
   * for a failure the error's content without its request ID (convex-backend
   * `crates/sync/src/state.rs` `hash_result`, `RedactedJsError::deduplication_hash`).
   */
  hash: string;
};

export function queryModification(outcome: QueryOutcome): QueryModification {
  const logLines = JSON.stringify(outcome.logLines);
  const journal = JSON.stringify(outcome.journal);
  const hash = createHash("sha256");
  if (outcome.status === "success") {
    const value = jsonText(outcome.value);
    hash.update("ok\0").update(value).update("\0").update(logLines);
    return {
      json: `"type":"QueryUpdated","value":${value},"logLines":${logLines},"journal":${journal}}`,
      hash: hash.digest("base64"),
    };
  }
  const errorData =
    outcome.errorData === undefined
      ? ""
      : `,"errorData":${JSON.stringify(outcome.errorData)}`;
  hash
    .update("error\0")
    .update(outcome.error.trace)
    .update("\0")
    .update(errorData)
    .update("\0")
    .update(logLines);
  return {
    json: `"type":"QueryFailed","errorMessage":${JSON.stringify(outcome.errorMessage)},"logLines":${logLines}${errorData},"journal":${journal}}`,
    hash: hash.digest("base64"),
  };
}

/**
 * `POST /api/query|mutation|action|function|run/…`: 200 with the value, or
 * 560 with the error, as `ConvexHttpClient` reads them (convex 1.48
 * `http_client.ts`).
 */
export function httpFunctionResponse(outcome: FunctionOutcome): {
  status: number;
  body: unknown;
} {
  if (outcome.status === "success")
    return {
      status: 200,
      body: {
        status: "success",
        value: outcome.value,
        logLines: outcome.logLines,
      },
    };
  return {
    status: STATUS_UDF_FAILED,
    body: {
      status: "error",
      errorMessage: outcome.errorMessage,
      ...(outcome.errorData !== undefined
        ? { errorData: outcome.errorData }
        : {}),
      logLines: outcome.logLines,
    },
  };
}
