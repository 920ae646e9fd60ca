/**
 * Queries and mutations off the main thread: a small pool of isolate worker
 * threads (isolateWorker.ts) per build, for the runs deadline.ts moved there
 * (MovedError: a window computed synchronously past MAIN_SLICE_MS). A
 * `while (true) {}` there holds no other client; its second ends with the
 * thread being terminated.
 *
 * The main thread answers the worker's syscalls inside the run's
 * RequestContext (`requestStorage.run`, syscalls.ts), with the handlers the
 * main thread's contexts use, so reads, writes, read sets, limits, identity,
 * journals and nested calls keep one implementation. A nested
 * `ctx.runQuery` / `ctx.runMutation` is checked here (the runner's
 * `#runNested`, through `context.offThread`), run in the worker, and its
 * result validated and merged here.
 *
 * Time: Convex's budget is the function's total, so a run gets what its
 * main-thread attempt left. It is wall-clock, as Convex's isolate timeout is,
 * paused while a syscall is answered (convex-backend
 * `crates/isolate/src/timeout.rs`, paused around syscalls): the worker reports
 * the time it spent outside round trips with each request, and the main
 * thread arms a timer for the rest whenever it answers. When the timer fires
 * the worker is terminated (V8 stops even a synchronous loop), the run fails
 * with Convex's timeout error, and a fresh worker is started for the next run.
 *
 * A worker's life: spawned on demand (at most MAX_WORKERS; further runs wait,
 * at most MAX_QUEUED_RUNS, then are refused as Convex refuses past its
 * concurrency limit) -> `ready` -> one run at a time -> idle -> terminated
 * when its run times out or when its build is retired. A worker that was
 * terminated, or exited, is replaced when its run ends.
 *
 * Usage:
 *   const offThread = new OffThread({ bundle, env, convex, onStrayLog });
 *   const json = await offThread.run(context, call, budgetMs);
 *   offThread.retire(); // the next build is installed
 */
import { booting } from "./booting.ts";
import os from "node:os";
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads";
import { appendLogLine, type LogLevel } from "./consoleFormat.ts";
import { USER_TIMEOUT_MS, UserTimeoutError } from "./deadline.ts";
import { rethrown, SystemError, wireSyscallError } from "./errors.ts";
import type { Bundle, UdfCall } from "./isolate.ts";
import { ANSWERS, SIGNAL_SLOTS, WAITING } from "./workerSignal.ts";
import type {
  CallState,
  FromIsolateWorker,
  IsolateWorkerData,
  Reply,
  Stamp,
  ToIsolateWorker,
} from "./isolateWorker.ts";
import {
  type ConvexGlobal,
  type RequestContext,
  requestStorage,
} from "./syscalls.ts";

/**
 * Workers running at once: one core is left to the main thread, which must
 * keep serving everyone else (and answers these runs' syscalls); at most two,
 * since runs land here only when they compute for long.
 */
const MAX_WORKERS = Math.max(1, Math.min(2, os.availableParallelism() - 1));
/** Moved runs waiting for a worker before new ones are refused. */
const MAX_QUEUED_RUNS = 32;
/**
 * convex-backend `application_function_runner` `FunctionExecutionLimiter`:
 * `ErrorMetadata::overloaded("TooManyConcurrentRequests", …)`.
 */
const OVERLOADED = "Too many concurrent requests, backoff and try again.";
const BOOT_URL = new URL("./workerBoot.mjs", import.meta.url);
/**
 * A worker's old-generation heap: Convex's 64 MB for a query's or mutation's
 * isolate, plus what a booted worker holds before any run (tsx, our sources,
 * the bundle: measured 15 MiB with the test fixture, 25 MiB with the chat
 * and Convex Auth), so a function that fits on Convex fits here.
 */
const WORKER_HEAP_MB = 64 + 32;
/** convex-backend `crates/isolate/src/termination.rs` `OutOfMemoryError`. */
const OUT_OF_MEMORY =
  "JavaScript execution ran out of memory (maximum memory usage: 64 MB)";

export type OffThreadOptions = {
  bundle: Bundle;
  env: Record<string, string>;
  convex: ConvexGlobal;
  /** Where log lines go that belong to no running call (module top level). */
  onStrayLog: (level: LogLevel, line: string) => void;
};

/** One top-level run in a worker and the nested calls it made. */
type Run = {
  /** By call id: the top-level call's context, and each open nested call's. */
  contexts: Map<number, RequestContext>;
  /** Nested calls running in the worker, settled by their `nestedDone`. */
  nested: Map<number, { resolve(value: string): void; reject(e: Error): void }>;
  budgetMs: number;
  /** The worker's time so far, as it last reported it. */
  usedMs: number;
  /** Fires when the budget is spent; cleared while a syscall is answered. */
  timer: NodeJS.Timeout | null;
  resolve(value: string): void;
  reject(error: Error): void;
};

type PoolWorker = {
  worker: Worker;
  signal: Int32Array;
  /** This side of the worker's `replies` channel. */
  replies: MessagePort;
  ready: Promise<void>;
  run: Run | null;
  alive: boolean;
  /** Sent `ready`. */
  booted: boolean;
  /** Waiting for the answer to a `syscall` or `nestedDone`: exactly one is due. */
  blocked: boolean;
};

export class OffThread {
  readonly #options: OffThreadOptions;
  /** Workers alive: idle, booting or running. */
  readonly #workers = new Set<PoolWorker>();
  readonly #idle: PoolWorker[] = [];
  readonly #queue: ((worker: PoolWorker) => void)[] = [];
  /** Call ids are unique across runs, so a call of a finished run is recognised. */
  #nextCallId = 0;
  #retired = false;

  constructor(options: OffThreadOptions) {
    this.#options = options;
  }

  /**
   * Runs `call` from the start in a worker, in `context` (a fresh transaction),
   * with `budgetMs` of execution; rejects with UserTimeoutError past it.
   */
  async run(
    context: RequestContext,
    call: UdfCall,
    budgetMs: number,
  ): Promise<string> {
    const worker = await this.#acquire();
    try {
      await worker.ready;
    } catch (error) {
      this.#release(worker);
      throw error;
    }
    return new Promise<string>((resolve, reject) => {
      const callId = this.#nextCallId++;
      const run: Run = {
        contexts: new Map([[callId, context]]),
        nested: new Map(),
        budgetMs,
        usedMs: 0,
        timer: null,
        resolve,
        reject,
      };
      context.offThread = {
        invoke: (child, nestedCall) =>
          this.#invokeNested(worker, run, child, nestedCall),
      };
      worker.run = run;
      Atomics.store(worker.signal, WAITING, 0);
      worker.worker.postMessage({
        type: "run",
        call,
        state: stateOf(callId, context),
      } satisfies ToIsolateWorker);
      this.#resume(worker, run);
    });
  }

  /**
   * Whether a run would start at once: a booted worker is idle. When none is
   * and the pool has room, one starts booting, for the runs to come.
   */
  readyNow(): boolean {
    if (this.#idle.some((worker) => worker.booted)) return true;
    if (this.#idle.length === 0 && this.#workers.size < MAX_WORKERS)
      this.#idle.push(this.#spawn());
    return false;
  }

  /** No worker stays: idle ones go now, busy ones when their run ends. */
  retire(): void {
    this.#retired = true;
    for (const worker of this.#idle.splice(0)) this.#kill(worker);
  }

  #acquire(): Promise<PoolWorker> {
    const booted = this.#idle.findIndex((worker) => worker.booted);
    const idle =
      booted === -1 ? this.#idle.pop() : this.#idle.splice(booted, 1)[0];
    if (idle !== undefined) return Promise.resolve(idle);
    if (this.#workers.size < MAX_WORKERS) return Promise.resolve(this.#spawn());
    if (this.#queue.length >= MAX_QUEUED_RUNS)
      return Promise.reject(new SystemError(OVERLOADED));
    return new Promise((resolve) => this.#queue.push(resolve));
  }

  /**
   * A run is over: the worker goes to the next waiting run or back to the
   * idle ones. One that was terminated is replaced at once, so the next moved
   * run does not wait for a worker to boot (tsx, the sources, the bundle:
   * several hundred ms).
   */
  #release(worker: PoolWorker): void {
    if (this.#retired) this.#kill(worker);
    const replacement = worker.alive ? worker : null;
    const next = this.#queue.shift();
    if (next !== undefined) next(replacement ?? this.#spawn());
    else if (!this.#retired) this.#idle.push(replacement ?? this.#spawn());
  }

  #spawn(): PoolWorker {
    const { port1, port2 } = new MessageChannel();
    const signal = new SharedArrayBuffer(
      SIGNAL_SLOTS * Int32Array.BYTES_PER_ELEMENT,
    );
    const worker = new Worker(BOOT_URL, {
      argv: ["./isolateWorker.ts"],
      workerData: {
        bundle: this.#options.bundle,
        env: this.#options.env,
        signal,
        replies: port2,
      } satisfies IsolateWorkerData,
      transferList: [port2],
      // The boot script registers tsx itself; the parent's loader flags would
      // register it twice.
      execArgv: [],
      // A run that allocates without bound ends its worker, not the backend.
      resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB },
    });
    worker.unref();
    const { promise: boot, ready, failed } = booting();
    const entry: PoolWorker = {
      worker,
      signal: new Int32Array(signal),
      replies: port1,
      ready: boot,
      run: null,
      alive: true,
      booted: false,
      blocked: false,
    };
    this.#workers.add(entry);
    worker.on("message", (message: FromIsolateWorker) => {
      if (message.type === "ready") {
        entry.booted = true;
        ready();
      } else if (message.type === "loadFailed") {
        this.#kill(entry);
        failed(
          new SystemError(
            `The isolate worker could not load the functions: ${message.error.message}`,
          ),
        );
      } else this.#onMessage(entry, message);
    });
    let outOfMemory = false;
    worker.on("error", (error: Error & { code?: string }) => {
      outOfMemory = error.code === "ERR_WORKER_OUT_OF_MEMORY";
    });
    worker.on("exit", (code) => {
      const error = new SystemError(
        outOfMemory
          ? OUT_OF_MEMORY
          : `The isolate worker running this function exited with code ${code} before it finished`,
      );
      failed(error);
      this.#gone(entry);
      if (entry.run !== null) this.#finish(entry, entry.run, { error });
    });
    return entry;
  }

  /** Forgets a worker that is ending; a waiting run may then spawn its replacement. */
  #gone(worker: PoolWorker): void {
    worker.alive = false;
    this.#workers.delete(worker);
    const index = this.#idle.indexOf(worker);
    if (index !== -1) this.#idle.splice(index, 1);
  }

  #kill(worker: PoolWorker): void {
    if (!worker.alive) return;
    this.#gone(worker);
    worker.replies.close();
    void worker.worker.terminate();
  }

  #onMessage(
    worker: PoolWorker,
    message: Exclude<FromIsolateWorker, { type: "ready" | "loadFailed" }>,
  ): void {
    if (message.type === "syscall" || message.type === "nestedDone")
      worker.blocked = true;
    switch (message.type) {
      case "syscall":
        this.#syscall(worker, message);
        return;
      case "nestedDone":
        this.#nestedDone(worker, message);
        return;
      case "log": {
        const context =
          message.callId === null
            ? undefined
            : worker.run?.contexts.get(message.callId);
        if (context === undefined)
          this.#options.onStrayLog(message.level, message.line);
        else appendLogLine(context.logLines, message.level, message.line);
        return;
      }
      case "done": {
        const run = worker.run;
        if (run === null || !run.contexts.has(message.callId)) return;
        if (!this.#pause(worker, run, message)) return;
        this.#finish(
          worker,
          run,
          message.ok
            ? { value: message.value ?? "null" }
            : { error: rethrown(message.error ?? { name: "", message: "" }) },
        );
        return;
      }
      default:
        message satisfies never;
    }
  }

  /** Answers one syscall in the context of the call that made it. */
  #syscall(
    worker: PoolWorker,
    message: Extract<FromIsolateWorker, { type: "syscall" }>,
  ): void {
    const run = worker.run;
    const context =
      message.callId === null ? undefined : run?.contexts.get(message.callId);
    if (run === null || context === undefined) {
      this.#answer(worker, null, {
        type: "result",
        ok: false,
        error: {
          message: `${message.op} was called after its function finished: await every call before returning`,
        },
      });
      return;
    }
    if (!this.#pause(worker, run, message)) return;
    const { convex } = this.#options;
    const fail = (error: unknown) =>
      this.#answer(worker, run, {
        type: "result",
        ok: false,
        error: wireSyscallError(error),
      });
    const succeed = (value: unknown) =>
      this.#answer(worker, run, { type: "result", ok: true, value });
    let result: unknown;
    try {
      result = requestStorage.run(context, () => {
        switch (message.kind) {
          case "sync":
            return convex.syscall(message.op, message.args as string);
          case "async":
            return (convex.asyncSyscallNow ?? convex.asyncSyscall)(
              message.op,
              message.args as string,
            );
          case "js":
            return convex.jsSyscall(
              message.op,
              message.args as Record<string, unknown>,
            );
          default:
            return message.kind satisfies never;
        }
      });
    } catch (error) {
      fail(error);
      return;
    }
    if (result instanceof Promise) result.then(succeed, fail);
    else succeed(result);
  }

  /**
   * A nested call of a run in `worker`, made by the syscall the worker is
   * blocked on: answered with `invoke`, so the call runs in the worker; it
   * settles when the worker reports its end.
   */
  #invokeNested(
    worker: PoolWorker,
    run: Run,
    child: RequestContext,
    call: UdfCall,
  ): Promise<string> {
    const callId = this.#nextCallId++;
    run.contexts.set(callId, child);
    return new Promise<string>((resolve, reject) => {
      run.nested.set(callId, { resolve, reject });
      this.#answer(worker, run, {
        type: "invoke",
        call,
        state: stateOf(callId, child),
      });
    });
  }

  /** A nested call ended in the worker; the syscall that started it answers with the checked result. */
  #nestedDone(
    worker: PoolWorker,
    message: Extract<FromIsolateWorker, { type: "nestedDone" }>,
  ): void {
    const run = worker.run;
    const waiter = run?.nested.get(message.callId);
    if (run === null || waiter === undefined) {
      this.#answer(worker, null, {
        type: "result",
        ok: false,
        error: { message: "A nested call ended after its caller finished" },
      });
      return;
    }
    if (!this.#pause(worker, run, message)) return;
    run.nested.delete(message.callId);
    run.contexts.delete(message.callId);
    if (message.ok) waiter.resolve(message.value ?? "null");
    else waiter.reject(rethrown(message.error ?? { name: "", message: "" }));
  }

  /**
   * Wakes the worker with `reply`, the answer to the request it is blocked
   * on. An answer for `run` after that run ended (a nested call its caller
   * left unawaited) goes nowhere; `run` null answers whatever is asked
   * (requests of no current run, answered at once).
   */
  #answer(worker: PoolWorker, run: Run | null, reply: Reply): void {
    if (!worker.alive || !worker.blocked) return;
    if (run !== null && worker.run !== run) return;
    worker.blocked = false;
    Atomics.store(worker.signal, WAITING, 0);
    worker.replies.postMessage(reply);
    Atomics.add(worker.signal, ANSWERS, 1);
    Atomics.notify(worker.signal, ANSWERS);
    if (worker.run !== null) this.#resume(worker, worker.run);
  }

  /**
   * The worker waits on the main thread: its clock stops. False if the run
   * was stopped instead: its budget was already spent, or it holds more
   * memory than Convex allows (isolateWorker.ts `overMemory`).
   */
  #pause(worker: PoolWorker, run: Run, stamp: Stamp): boolean {
    if (run.timer !== null) clearTimeout(run.timer);
    run.timer = null;
    run.usedMs = stamp.usedMs;
    if (this.#outOfMemory(worker, run, stamp)) return false;
    if (stamp.usedMs < run.budgetMs) return true;
    this.#expire(worker, run);
    return false;
  }

  /** Stops the run if the worker found it over Convex's memory limits. */
  #outOfMemory(worker: PoolWorker, run: Run, stamp: Stamp): boolean {
    if (!stamp.outOfMemory) return false;
    this.#kill(worker);
    this.#finish(worker, run, { error: new SystemError(OUT_OF_MEMORY) });
    return true;
  }

  #resume(worker: PoolWorker, run: Run): void {
    if (run.timer !== null) clearTimeout(run.timer);
    run.timer = setTimeout(
      () => this.#timeUp(worker, run),
      Math.max(0, run.budgetMs - run.usedMs),
    );
  }

  /**
   * The budget's wall time since the worker last resumed is up. If the worker
   * is not running but waiting for the main thread (a request or its `done`
   * still in our queue behind other work), that time was ours: the request
   * carries the worker's own time, and `#pause` or `done` decides on it.
   */
  #timeUp(worker: PoolWorker, run: Run): void {
    run.timer = null;
    if (Atomics.load(worker.signal, WAITING) === 1) return;
    this.#expire(worker, run);
  }

  /** The budget is spent: the thread is stopped wherever it is. */
  #expire(worker: PoolWorker, run: Run): void {
    this.#kill(worker);
    this.#finish(worker, run, { error: new UserTimeoutError(USER_TIMEOUT_MS) });
  }

  #finish(
    worker: PoolWorker,
    run: Run,
    outcome: { value: string } | { error: Error },
  ): void {
    if (worker.run !== run) return;
    worker.run = null;
    if (run.timer !== null) clearTimeout(run.timer);
    run.timer = null;
    const ended = "error" in outcome ? outcome.error : null;
    for (const waiter of run.nested.values())
      waiter.reject(ended ?? new Error("The caller finished first"));
    run.nested.clear();
    if ("error" in outcome) run.reject(outcome.error);
    else run.resolve(outcome.value);
    this.#release(worker);
  }
}

function stateOf(callId: number, context: RequestContext): CallState {
  return {
    callId,
    udfType: context.udfType === "mutation" ? "mutation" : "query",
    nowMs: context.nowMs,
    componentPath: context.componentPath,
  };
}
