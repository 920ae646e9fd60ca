/**
 * How a failed function reads, in one place: the text clients get, the trace
 * nested calls and scheduled jobs carry, and an HTTP action's error body.
 *
 * Convex's forms (convex-backend `common/src/errors.rs` `JsError`,
 * `application/src/redaction.rs` `RedactedJsError`, `udf/src/helpers.rs`
 * `format_uncaught_error`):
 * - the trace is the message, then one `    at fn (../convex/file.ts:L:C)`
 *   line per frame, every line ending in "\n";
 * - a client sees `[Request ID: <id>] Server Error\n` then the trace;
 * - a nested `runQuery` / `runMutation` / `runAction` failure reaches its
 *   caller as the trace alone (`nested_to_string`), so a request id never
 *   appears twice;
 * - an HTTP action failure is a 500 with JSON `{code, trace, data?}`, where
 *   `code` is `[Request ID: <id>] Server Error: <message>`.
 *
 * Usage:
 *   const failure = functionFailure(requestId, uncaught(e.name, e.message), frames);
 *   new Response(JSON.stringify(httpActionErrorBody(requestId, failure)), { status: 500 });
 */
import type { JSONValue } from "convex/values";

/** The parts of a failure that do not depend on the request. */
export type JsError = {
  /** "Uncaught Error: boom", or a message of ours ("Could not find public function …"). */
  message: string;
  /** The trace: `message`, then the frames, each line ending in "\n". */
  trace: string;
  /** A ConvexError's data, as Convex JSON. */
  data?: JSONValue;
};

/**
 * A failure the backend describes itself rather than the function's code
 * throwing: reported as its message alone, without "Uncaught" or frames
 * (a crashed or timed-out Node worker, a full queue).
 */
export class SystemError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SystemError";
  }
}

/** What a thrown value says about itself, read defensively (user code may throw anything). */
export type ThrownParts = {
  name: string;
  message: string;
  stack?: string;
  /** A ConvexError's data, which the library already serialized (convex 1.48 `serializeConvexErrorData`). */
  convexErrorData?: string;
};

/** A ConvexError (or a subclass, which keeps its own `name`) is recognised by its symbol, not its class. */
export function thrownParts(error: unknown): ThrownParts {
  if (error === null || typeof error !== "object")
    return { name: "", message: String(error) };
  const e = error as {
    name?: unknown;
    message?: unknown;
    stack?: unknown;
    data?: unknown;
  };
  return {
    name: typeof e.name === "string" ? e.name : "",
    message: typeof e.message === "string" ? e.message : "",
    ...(typeof e.stack === "string" ? { stack: e.stack } : {}),
    ...(Symbol.for("ConvexError") in e && typeof e.data === "string"
      ? { convexErrorData: e.data }
      : {}),
  };
}

/**
 * The inverse of `thrownParts`, for a value thrown on a worker thread: an
 * Error the runner reports as if it had been thrown here (frames from
 * `stack`, a ConvexError by its symbol and serialized data).
 */
export function rethrown(parts: ThrownParts): Error {
  const error = Object.assign(new Error(parts.message), { name: parts.name });
  error.stack = parts.stack ?? "";
  if (parts.convexErrorData !== undefined) {
    Object.assign(error, {
      [Symbol.for("ConvexError")]: true,
      data: parts.convexErrorData,
    });
  }
  return error;
}

/** An error whose `data` the library re-throws as a ConvexError (`performAsyncSyscall`). */
export class SyscallConvexError extends Error {
  constructor(
    message: string,
    readonly data: JSONValue,
  ) {
    super(message);
  }
}

/** A failed syscall as it crosses to a worker thread (`"use node"` actions, isolate workers). */
export type WireSyscallError = { message: string; data?: JSONValue };

/** The host side: what the worker needs of a syscall's error. */
export function wireSyscallError(error: unknown): WireSyscallError {
  const e = error as { message?: unknown } | null;
  return {
    message: typeof e?.message === "string" ? e.message : String(error),
    ...(error instanceof SyscallConvexError ? { data: error.data } : {}),
  };
}

/** The worker side: the error the library's `performAsyncSyscall` reads (`data` makes it a ConvexError). */
export function syscallError(error: WireSyscallError): Error {
  return Object.assign(new Error(error.message), { data: error.data });
}

/** `format_uncaught_error`: "Uncaught {name}: {message}", leaving out an empty part. */
export function uncaught(name: string, message: string): string {
  if (name !== "" && message !== "") return `Uncaught ${name}: ${message}`;
  if (name !== "") return `Uncaught ${name}`;
  if (message !== "") return `Uncaught ${message}`;
  return "Uncaught";
}

export function jsError(
  message: string,
  frames: readonly string[] = [],
  data?: JSONValue,
): JsError {
  const trace = `${message}\n${frames.map((frame) => `${frame}\n`).join("")}`;
  return data === undefined ? { message, trace } : { message, trace, data };
}

/** What the sync protocol and the HTTP API send as `errorMessage`. */
export function clientErrorMessage(requestId: string, error: JsError): string {
  return `[Request ID: ${requestId}] Server Error\n${error.trace}`;
}

/** The JSON body of a failed HTTP action (`RedactedJsError::to_http_response_parts`). */
export function httpActionErrorBody(
  requestId: string,
  error: JsError,
): { code: string; trace: string; data?: JSONValue } {
  const body = {
    code: `[Request ID: ${requestId}] Server Error: ${error.message}`,
    trace: error.trace,
  };
  return error.data === undefined ? body : { ...body, data: error.data };
}
