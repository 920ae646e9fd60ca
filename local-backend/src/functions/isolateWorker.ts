/**
 * The entry of an isolate worker thread: the bundle evaluated as in the main
 * thread's contexts (isolate.ts `evaluateForWorker`, the same prelude), one
 * query or mutation at a time for the main thread (offThread.ts). Runs land
 * here when they computed synchronously past the main thread's slice
 * (deadline.ts MAIN_SLICE_MS), so a loop here holds no other client; the main
 * thread stops it by terminating the thread.
 *
 * Syscalls are answered by the main thread, inside the run's RequestContext,
 * by the same handlers as there (syscalls.ts). Each one blocks this thread:
 * the request goes out as a message, then the thread waits on `signal`
 * (Atomics.wait) until the main thread has posted the answer on `replies`
 * and bumped the counter, and takes it with `receiveMessageOnPort`. Answers
 * are messages, not bytes in the shared buffer, so a result of any size
 * arrives whole; the buffer only wakes the thread. Synchronous syscalls
 * (`Convex.syscall`) need this; async ones become synchronous round trips,
 * which suits functions that run long anyway.
 *
 * A nested `ctx.runQuery` / `ctx.runMutation` (`1.0/runUdf`) runs here, in
 * this context, as Convex runs it in the caller's isolate: the main thread
 * checks it and answers `invoke` with the call and its state; the call runs
 * under a call id of its own, and its end (`nestedDone`) is answered with the
 * syscall's result, which the main thread has validated and merged.
 *
 * The per-call host state (the frozen `Date`, the function type that forbids
 * timers, the component whose `process.env` it reads, the log lines' owner)
 * follows each call through an AsyncLocalStorage. Time: the thread counts the
 * time it spends outside blocking round trips (`usedMs`, sent with each
 * request) and the main thread times the run from it, paused while it
 * answers, as Convex's isolate timeout pauses during syscalls. While a
 * request waits in the main thread's queue the thread says so in `signal`
 * (workerSignal.ts WAITING), so a busy main thread does not run down the
 * run's budget: the request's own `usedMs` decides.
 *
 * Protocol:
 *   main -> worker (parentPort): `run`
 *   main -> worker (replies):    `result` | `invoke`, one per blocking request
 *   worker -> main (parentPort): `ready` | `loadFailed` once, then blocking
 *                                `syscall` and `nestedDone`, and `log`, `done`
 */
import { AsyncLocalStorage } from "node:async_hooks";
import v8 from "node:v8";
import vm from "node:vm";
import {
  type MessagePort,
  parentPort,
  receiveMessageOnPort,
  workerData,
} from "node:worker_threads";
import type { LogLevel } from "./consoleFormat.ts";
import {
  syscallError,
  type ThrownParts,
  thrownParts,
  type WireSyscallError,
} from "./errors.ts";
import {
  type Bundle,
  evaluateForWorker,
  invokeUdf,
  type UdfCall,
} from "./isolate.ts";
import type { ComponentTree } from "./components.ts";
import type { ConvexGlobal } from "./syscalls.ts";
import { ANSWERS, WAITING } from "./workerSignal.ts";

export type IsolateWorkerData = {
  bundle: Bundle;
  /** The deployment's variables, as the build's `process.env` has them. */
  env: Record<string, string>;
  /** An Int32Array's buffer, laid out in workerSignal.ts. */
  signal: SharedArrayBuffer;
  /** Where answers arrive; read only with `receiveMessageOnPort`. */
  replies: MessagePort;
};

/** One call's host state; `callId` names it in every message. */
export type CallState = {
  callId: number;
  udfType: "query" | "mutation";
  nowMs: number;
  componentPath: string;
};

export type ToIsolateWorker = { type: "run"; call: UdfCall; state: CallState };

export type Reply =
  | { type: "result"; ok: true; value: unknown }
  | { type: "result"; ok: false; error: WireSyscallError }
  | { type: "invoke"; call: UdfCall; state: CallState };

export type FromIsolateWorker =
  | { type: "ready" }
  | { type: "loadFailed"; error: ThrownParts }
  | ({
      type: "syscall";
      callId: number | null;
      kind: "sync" | "async" | "js";
      op: string;
      args: unknown;
    } & Stamp)
  | ({
      type: "nestedDone";
      callId: number;
      ok: boolean;
      value?: string;
      error?: ThrownParts;
    } & Stamp)
  | { type: "log"; callId: number | null; level: LogLevel; line: string }
  | ({
      type: "done";
      callId: number;
      ok: boolean;
      value?: string;
      error?: ThrownParts;
    } & Stamp);

/**
 * Stamped on every request and on `done`: the run's time outside round
 * trips, and whether it holds more memory than Convex allows (`overMemory`).
 */
export type Stamp = { usedMs: number; outOfMemory: boolean };

/** The requests that wait for an answer. */
type Blocking = Extract<FromIsolateWorker, { type: "syscall" | "nestedDone" }>;
/** One of them before the worker stamps its time on it (distributed over the union). */
type Unstamped<T = Blocking> = T extends unknown ? Omit<T, keyof Stamp> : never;

const port = parentPort!;
const data = workerData as IsolateWorkerData;
const signal = new Int32Array(data.signal);
const currentCall = new AsyncLocalStorage<CallState>();

/** The current run's time outside round trips, and when it last resumed. */
let usedMs = 0;
let resumedAt = performance.now();
/**
 * Convex's limits for one query or mutation: 64 MiB of V8 heap
 * (`ISOLATE_MAX_USER_HEAP_SIZE`) and, outside it, 64 MiB of ArrayBuffers
 * (`ISOLATE_MAX_ARRAY_BUFFER_TOTAL_SIZE`; convex-backend
 * `crates/common/src/knobs.rs`). The thread's own heap cap (offThread.ts)
 * stops a run that allocates without ever making a request, but V8 reaches
 * it only after collecting over and over near the cap, for seconds, and it
 * does not cover ArrayBuffers; so each request also checks what the run
 * added to both (`stamp`).
 */
const HEAP_LIMIT_BYTES = 64 * 1024 * 1024;
const ARRAY_BUFFER_LIMIT_BYTES = 64 * 1024 * 1024;

/** The thread's heap and external memory when the current run started. */
let atStart = memory();

function memory(): { heap: number; external: number } {
  const stats = v8.getHeapStatistics();
  return { heap: stats.used_heap_size, external: stats.external_memory };
}

let collect: (() => void) | null = null;

/** A full collection (`--expose-gc`'s `gc`, taken without the flag at start-up). */
function collectGarbage(): void {
  if (collect === null) {
    v8.setFlagsFromString("--expose-gc");
    collect = vm.runInNewContext("gc") as () => void;
  }
  collect();
}

/**
 * Whether the run holds more than Convex allows. The readings count garbage
 * not yet collected, so past a limit the thread collects before it decides:
 * only what is still reachable then is the run's (a full collection of this
 * small heap, only when a limit is crossed).
 */
function overMemory(): boolean {
  const over = (now: { heap: number; external: number }) =>
    now.heap - atStart.heap > HEAP_LIMIT_BYTES ||
    now.external - atStart.external > ARRAY_BUFFER_LIMIT_BYTES;
  if (!over(memory())) return false;
  collectGarbage();
  return over(memory());
}

function spent(): number {
  return usedMs + (performance.now() - resumedAt);
}

/** What every request and `done` carries (offThread.ts checks it). */
function stamp(): Stamp {
  const usedNow = spent();
  return { usedMs: usedNow, outOfMemory: overMemory() };
}

/** Sends `request` and blocks until its answer arrives. */
function roundTrip(request: Unstamped): Reply {
  const stamped = stamp();
  usedMs = stamped.usedMs;
  let seen = Atomics.load(signal, ANSWERS);
  Atomics.store(signal, WAITING, 1);
  port.postMessage({ ...request, ...stamped });
  for (;;) {
    const received = receiveMessageOnPort(data.replies);
    if (received !== undefined) {
      resumedAt = performance.now();
      return received.message as Reply;
    }
    Atomics.wait(signal, ANSWERS, seen);
    seen = Atomics.load(signal, ANSWERS);
  }
}

function resultOf(reply: Reply): unknown {
  if (reply.type !== "result")
    throw new Error("A nested call was answered where a result was due");
  if (!reply.ok) throw syscallError(reply.error);
  return reply.value;
}

const syscall = (
  kind: "sync" | "async" | "js",
  op: string,
  args: unknown,
): Reply =>
  roundTrip({
    type: "syscall",
    callId: currentCall.getStore()?.callId ?? null,
    kind,
    op,
    args,
  });

const convex: ConvexGlobal = {
  syscall: (op, jsonArgs) => resultOf(syscall("sync", op, jsonArgs)) as string,
  asyncSyscall(op, jsonArgs) {
    const reply = syscall("async", op, jsonArgs);
    if (reply.type === "invoke") return runNested(reply);
    return reply.ok
      ? Promise.resolve(reply.value as string)
      : Promise.reject(syscallError(reply.error));
  },
  jsSyscall: (op, args) => resultOf(syscall("js", op, args)),
};

/** A nested call the main thread handed back: run it here, then report its end for the final result. */
function runNested(reply: Extract<Reply, { type: "invoke" }>): Promise<string> {
  const { callId } = reply.state;
  const done = (
    outcome: { ok: true; value: string } | { ok: false; error: ThrownParts },
  ) =>
    resultOf(roundTrip({ type: "nestedDone", callId, ...outcome })) as string;
  // Started from the caller's queue, as an async syscall's work would be.
  return Promise.resolve()
    .then(() =>
      currentCall.run(reply.state, () => invokeUdf(components, reply.call)),
    )
    .then(
      (value) => done({ ok: true, value }),
      (error: unknown) => done({ ok: false, error: thrownParts(error) }),
    );
}

/** The bundle, evaluated once; on failure the main thread is told and the thread ends. */
function load(): ComponentTree {
  try {
    return evaluateForWorker(
      data.bundle,
      { convex, env: data.env },
      {
        current: () => currentCall.getStore(),
        writeLine: (call, level, line) =>
          port.postMessage({
            type: "log",
            callId: call?.callId ?? null,
            level,
            line,
          } satisfies FromIsolateWorker),
      },
    );
  } catch (error) {
    port.postMessage({
      type: "loadFailed",
      error: thrownParts(error),
    } satisfies FromIsolateWorker);
    process.exit(1);
  }
}

const components = load();

// A promise a function left unawaited may fail after it returned (a nested
// call whose caller finished first): that is the function's business, as on
// the main thread, and must not end the thread for the next run.
process.on("unhandledRejection", () => undefined);

port.on("message", ({ call, state }: ToIsolateWorker) => {
  usedMs = 0;
  resumedAt = performance.now();
  atStart = memory();
  const done = (
    outcome: { ok: true; value: string } | { ok: false; error: ThrownParts },
  ) => {
    const stamped = stamp();
    Atomics.store(signal, WAITING, 1);
    port.postMessage({
      type: "done",
      callId: state.callId,
      ...outcome,
      ...stamped,
    } satisfies FromIsolateWorker);
  };
  currentCall
    .run(state, () => invokeUdf(components, call))
    .then(
      (value) => done({ ok: true, value }),
      (error: unknown) => done({ ok: false, error: thrownParts(error) }),
    );
});
port.postMessage({ type: "ready" } satisfies FromIsolateWorker);
