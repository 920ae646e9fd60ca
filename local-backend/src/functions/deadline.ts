/**
 * Execution time limits: queries and mutations get Convex's 1 s of execution,
 * actions 10 minutes, and a function that runs past its limit is stopped with
 * Convex's error, "Function execution timed out (maximum duration: 1s)"
 * (convex-backend `crates/isolate/src/termination.rs` `UserTimeoutError`, knobs
 * `DATABASE_UDF_USER_TIMEOUT` = 1 s and `ACTIONS_USER_TIMEOUT_SECS` = 600).
 *
 * Mechanism, for queries and mutations: they run in a `node:vm` context of their
 * own created with `microtaskMode: "afterEvaluate"`, so the context has its own
 * microtask queue, drained inside `Script.runInContext(..., { timeout })`. All
 * user code is entered through such a call (a "window"): the first call of the
 * function, and every continuation after a host promise settles. V8's watchdog
 * terminates whatever runs past the window's timeout, a `while (true) {}` as
 * much as an endless chain of awaits, and the error comes back here.
 * - Syscalls answer synchronously (the database is in process), so a function
 *   that only awaits syscalls runs start to finish in one window; the context's
 *   `Convex.asyncSyscall` hands their result to context-realm `then` callbacks,
 *   which run in the same drain. A syscall that settles later (a nested
 *   `ctx.runMutation`) opens a new window with the remaining budget.
 * - The budget counts user time as Convex does: each window's time minus
 *   the time spent in syscalls inside it (database work is free, as in
 *   Convex); a window's time is the lesser of its wall and CPU time
 *   (`windowUserMs`). The watchdog is set from the remaining user
 *   time; since database time inside a window would count against it, a
 *   window that has run 5 ms ends at its next async syscall and the result
 *   is delivered in a fresh window (which also lets the event loop turn).
 * - A loop that mostly awaits the database therefore runs for several seconds
 *   of wall time before its second of user time is spent; between its windows
 *   the event loop turns and other functions run in contexts of their own.
 *   Once a run's windows have held the thread LONG_RUN_AFTER_MS in all, they
 *   end after LONG_RUN_SLICE_MS instead, so a long run delays each turn of
 *   another client's request by about a millisecond.
 * - Functions running at the same time each lease a context (a pool, as
 *   Convex runs each function in an isolate of its own): windows of two
 *   functions interleave on the one thread but never share a microtask queue,
 *   and each budget counts only its own windows.
 * - A terminated context may still hold the runaway's queued continuations, so
 *   it is thrown away and the bundle is evaluated again into a fresh one, as
 *   Convex drops an isolate after a termination ("If the isolate is terminated,
 *   it should be dropped and a new isolate should be created", ibid.).
 * - A termination that lands inside the context's microtask drain leaves the
 *   promise hooks' `before` without its `after`, and Node aborts the process at
 *   the next callback ("async hook stack has become corrupted"). After a
 *   termination the async-id stack is popped back to its depth at entry,
 *   through Node's `async_wrap` binding (the one internal this module uses).
 * - One watchdog costs ~0.07 ms, and milliseconds on a loaded machine (Node
 *   starts and joins a thread per timed call), which is why syscalls resolve
 *   in the same window rather than each opening one, and why a burst of
 *   mutations runs in shared windows (`TimedRealm.shared`): one watchdog over
 *   several runs' first windows, each nested without one of its own.
 * - A run's end is observed by a `then` in the context's realm, so a run that
 *   ends inside a window is known to have ended when the window returns
 *   (`invokeNow`), and the next one can start in the same shared window.
 *
 * - A window's watchdog is also capped at MAIN_SLICE_MS: a synchronous stretch
 *   longer than that (a `while (true) {}`, a long computation) would hold every
 *   other client until its second is spent. When the cap rather than the
 *   budget fires, the run fails with MovedError instead of the timeout, and
 *   the runner runs it again from the start in an isolate worker with what is
 *   left of the budget (offThread.ts), where its loop holds nobody.
 *
 * - Memory: the main thread's contexts share the process's heap, so no heap
 *   cap can apply to one run there. Each run is charged what the heap grew by
 *   during its windows (not inside its syscalls: the host's transaction
 *   state is outside Convex's isolate heap too), less what collections freed
 *   since, and is moved to a worker (whose heap is capped) when that passes
 *   Convex's 64 MB (MAIN_HEAP_CHARGE_BYTES), before the process is hurt; it
 *   ends there with Convex's out-of-memory error, or, if it was only making
 *   garbage faster than it was collected, with its result.
 * - A dropped context (terminated or moved) is drained once more with its
 *   syscalls cut off (`#dispose`: async ones never settle, sync ones wait
 *   for the drain's watchdog): what its queue still holds would otherwise
 *   keep it, and all its run allocated, alive for good.
 *
 * Actions run in a normal context (timers, fetch) with a wall-clock limit: an
 * action's synchronous loop is not stopped before it yields.
 *
 * Usage:
 *   const realm = new TimedRealm((wrap) => evaluate(bundle, wrap));
 *   const json = await realm.invoke(USER_TIMEOUT_MS, (modules) =>
 *     lookup(modules).invokeQuery(args),
 *   );
 */
import v8 from "node:v8";
import vm from "node:vm";
import { digestNow } from "./digest.ts";
import type { ConvexGlobal } from "./syscalls.ts";

/** `DATABASE_UDF_USER_TIMEOUT` (convex-backend `crates/common/src/knobs.rs`). */
export const USER_TIMEOUT_MS = 1_000;
/** `ACTIONS_USER_TIMEOUT_SECS`: 10 minutes. */
export const ACTION_TIMEOUT_MS = 600_000;

/**
 * A window that has run this long ends at its next async syscall, so that time
 * spent in the database (which Convex does not count) cannot make the watchdog,
 * set from user time, fire early; it also lets the event loop turn, which
 * bounds what a long query adds to other clients' latency: a request needs a
 * few turns (read, run, write), each behind at most one such window. Short,
 * as each window costs a watchdog (~0.1 ms).
 */
const WINDOW_SLICE_MS = 5;

/**
 * A run whose windows have held the main thread this long in all (wall time,
 * syscalls included) is a long one: a loop awaiting the database, a scan of
 * thousands of documents. From then on its windows end at the first async
 * syscall after LONG_RUN_SLICE_MS, so a request of another client, which
 * needs a few event-loop turns, waits behind a millisecond at each turn
 * rather than WINDOW_SLICE_MS (with one such query running, another client's
 * mutation took 20 ms at p50 against 3 ms without it; bench/runaway.ts). The
 * long run pays for more watchdogs (~0.1 ms per window); ordinary functions,
 * which hold the thread a few ms in all, never get here.
 */
const LONG_RUN_AFTER_MS = 20;
const LONG_RUN_SLICE_MS = 1;

/**
 * The longest one window runs on the main thread before the run is moved to
 * an isolate worker (MovedError). A function that awaits the database ends
 * each window within WINDOW_SLICE_MS plus one syscall, so only a synchronous
 * computation this long pays for a rerun; and a client waiting behind it is
 * held at most this long (plus its own work), well inside the 100 ms the
 * runaway bench allows other clients at p99. Shorter would move ordinary
 * functions whose single window is a few ms of rate-limiter or validation
 * work on a busy machine (the watchdog is wall-clock, V8's).
 */
export const MAIN_SLICE_MS = 40;

/**
 * Memory a run may add on the main thread before it is moved to an isolate
 * worker, whose heap is capped (offThread.ts): Convex's 64 MiB isolate heap
 * (`ISOLATE_MAX_USER_HEAP_SIZE`, convex-backend `crates/common/src/knobs.rs`).
 * The main thread's contexts share the process's heap, so what a run holds
 * cannot be read directly; it is charged what the heap (V8's heap in use plus
 * ArrayBuffers, `heapBytes`) grew by during each of its windows, outside its
 * syscalls, less what the heap shrank by between and within them (a
 * collection freed garbage, its own among it). Garbage not yet collected
 * counts, so a run that makes this much faster than V8 collects it is moved
 * as well, and gives the same result in the worker, where the limit is
 * exact; a run that keeps it ends there with Convex's out-of-memory error,
 * before the process is hurt. A collection freeing other runs' garbage
 * credits this one too; MAIN_HEAP_BACKSTOP_BYTES bounds what that misses.
 */
export const MAIN_HEAP_CHARGE_BYTES = 64 * 1024 * 1024;

/**
 * Above this much heap in use (half of V8's limit for the process), a run
 * still going at the end of a window is moved whatever it was charged: the
 * charge misses growth that a collection inside the run's window hid, and
 * several runs each under their charge could together approach the limit,
 * past which V8 ends the whole process.
 */
const MAIN_HEAP_BACKSTOP_BYTES = v8.getHeapStatistics().heap_size_limit / 2;

/** What the process's isolate holds now: V8's heap in use, plus ArrayBuffers and other external memory (~0.5 us). */
function heapBytes(): number {
  const stats = v8.getHeapStatistics();
  return stats.used_heap_size + stats.external_memory;
}

/**
 * Contexts evaluated at most: how many queries and mutations can be running
 * at once. A run that finds every context leased waits for one.
 */
const MAX_CONTEXTS = 8;

/** The name under which a timed context finds the host's entry hook. */
const ENTER_HOOK = "__localBackendEnter";
/** Where TIMED_PRELUDE leaves its `Observe`. */
const OBSERVE_HOOK = "__localBackendObserve";
const ENTER_SCRIPT = new vm.Script(`globalThis.${ENTER_HOOK}()`, {
  filename: "local-backend:enter",
});
/** Entered in a dropped context only for the microtask drain that follows it (`#dispose`). */
const DRAIN_SCRIPT = new vm.Script("undefined", {
  filename: "local-backend:drain",
});
/**
 * The last drain of a dropped context, at most (`#dispose`): its watchdog then
 * ends the drain, and V8 discards what the queue still holds, which is the
 * point, so it may be short.
 */
const DROP_DRAIN_MS = 1;
/**
 * A dropped context's syscalls are cut off, and nothing they do may reject: a
 * rejection there would reach a promise nobody may be observing (the run's
 * own, when a watchdog cut its first window before `observe`, or one the
 * function left unawaited), and Node would report it as unhandled. An async
 * syscall never settles, so its continuation stops at that `await`; a sync
 * one cannot return without a made-up result, so inside the drain it waits
 * for the drain's watchdog (at most DROP_DRAIN_MS), whose termination ends
 * the wait and discards the queue. Outside a drain (never expected) it throws
 * DROPPED_MESSAGE.
 */
const DROPPED_MESSAGE =
  "This function was stopped: its remaining work cannot reach the database";
/** What a cut-off sync syscall waits on, until the drain's watchdog wakes it. */
const DRAIN_WAIT = new Int32Array(new SharedArrayBuffer(4));

/**
 * Node's async-id stack (`process.binding("async_wrap")`, deprecated but the
 * only handle on it): the fields to read its depth and the pop that checks ids.
 */
type AsyncWrapBinding = {
  constants: { kStackLength: number; kExecutionAsyncId: number };
  async_hook_fields: Uint32Array;
  async_id_fields: Float64Array;
  popAsyncContext(asyncId: number): boolean;
};

let asyncWrap: AsyncWrapBinding | null = null;

function asyncWrapBinding(): AsyncWrapBinding {
  if (asyncWrap === null) {
    // Loading it emits a DEP0111 warning, which would reach every user's terminal.
    const descriptor = Object.getOwnPropertyDescriptor(process, "emitWarning");
    process.emitWarning = () => undefined;
    try {
      asyncWrap = (
        process as unknown as { binding(name: string): AsyncWrapBinding }
      ).binding("async_wrap");
    } finally {
      Object.defineProperty(process, "emitWarning", descriptor!);
    }
  }
  return asyncWrap;
}

function asyncStackDepth(): number {
  const binding = asyncWrapBinding();
  return binding.async_hook_fields[binding.constants.kStackLength];
}

/** Pops the contexts a terminated microtask pushed and never popped. */
function restoreAsyncStack(depth: number): void {
  const binding = asyncWrapBinding();
  const { kStackLength, kExecutionAsyncId } = binding.constants;
  while (binding.async_hook_fields[kStackLength] > depth) {
    binding.popAsyncContext(binding.async_id_fields[kExecutionAsyncId]);
  }
}

/** Wall time in ms: how windows and syscalls are timed, as V8's watchdog is. */
const now = (): number => performance.now();

/**
 * A run's first window may start from a CPU reading taken at most this long
 * ago (wall time) rather than take one: `process.cpuUsage()` is a getrusage
 * over every thread of the process, 25 to 75 us each under 50 writers (more
 * than a tenth of a short mutation), and in a burst the runs' first windows
 * follow each other closely. Later windows of a run (a long loop's slices)
 * always take a fresh reading.
 */
const FIRST_WINDOW_CPU_READING_MS = 5;

let lastCpuReading = { wallMs: -Infinity, cpuMs: 0 };

/** The process's CPU time in ms (every thread's). */
function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  const reading = (user + system) / 1000;
  lastCpuReading = { wallMs: now(), cpuMs: reading };
  return reading;
}

/**
 * A window's starting CPU time. An earlier reading only adds the CPU time
 * used since (at most FIRST_WINDOW_CPU_READING_MS per core, once per run) to
 * the window's, and a window is charged no more than its wall time anyway
 * (`windowUserMs`), which is what Convex charges.
 */
function windowCpuStartMs(firstWindow: boolean): number {
  return firstWindow &&
    now() - lastCpuReading.wallMs <= FIRST_WINDOW_CPU_READING_MS
    ? lastCpuReading.cpuMs
    : cpuMs();
}

/**
 * The user time a window used: the lesser of its wall time and the process's
 * CPU time over it, less its syscalls. Wall time alone would charge a
 * function for the moments the machine's other processes held the core (a
 * heavy query near its limit would time out on a busy machine only); CPU
 * time alone would charge it for other threads' work (the fsync pool, a
 * worker). Convex counts a countdown paused during syscalls
 * (convex-backend `crates/isolate/src/timeout.rs`).
 */
function windowUserMs(budget: {
  windowStart: number;
  windowCpuStart: number;
  syscallMs: number;
  syscallSince: number;
}): number {
  const at = now();
  const syscallMs =
    budget.syscallMs + (budget.syscallSince < 0 ? 0 : at - budget.syscallSince);
  return Math.max(
    0,
    Math.min(at - budget.windowStart, cpuMs() - budget.windowCpuStart) -
      syscallMs,
  );
}

/**
 * A shared window's watchdog fired in the host code between runs (the body's
 * own work, not a function's), which the caller must sort out.
 */
export class HostCodeCut extends Error {
  constructor() {
    super("A shared window's watchdog fired between runs");
    this.name = "HostCodeCut";
  }
}

/** A function that ran past its limit; the text is Convex's. */
export class UserTimeoutError extends Error {
  constructor(limitMs: number) {
    super(
      `Function execution timed out (maximum duration: ${formatDuration(limitMs)})`,
    );
    this.name = "UserTimeoutError";
  }
}

/**
 * Not a failure: a run whose window outlasted MAIN_SLICE_MS was stopped (its
 * context discarded, as after a timeout) so that it can run again from the
 * start off the main thread. `usedMs` of its budget is spent.
 */
export class MovedError extends Error {
  constructor(
    readonly usedMs: number,
    /** Moved for what it allocated (MAIN_HEAP_CHARGE_BYTES), not for its time. */
    readonly forMemory = false,
  ) {
    super(
      `Moved off the main thread after ${Math.round(usedMs)} ms${forMemory ? " for its memory" : ""}`,
    );
    this.name = "MovedError";
  }
}

/** Rust's `Duration` debug format, which Convex's message uses: `1s`, `600s`, `1.5s`. */
function formatDuration(ms: number): string {
  return `${ms / 1000}s`;
}

/**
 * Runs a promise-returning action with a wall-clock limit (actions); the
 * promise it loses to keeps running but nobody waits for it.
 */
export async function withWallClockLimit<T>(
  limitMs: number,
  run: () => Promise<T>,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UserTimeoutError(limitMs)), limitMs);
  });
  try {
    return await Promise.race([run(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** How a run ended, when it ended inside the window that started it (`invokeNow`). */
export type Settled = { value: string } | { error: Error };

/**
 * Filled in by `invokeNow` with the run it starts, before the run's first
 * window, so that a caller whose shared window was cut (HostCodeCut) can stop
 * that run before it starts the call again (`TimedRealm.stop`); `stopped`
 * keeps one still waiting for a context from starting.
 */
export type RunHandle = { run: object | null; stopped?: boolean };

/**
 * One top-level function run and everything it calls in the same transaction
 * (nested `ctx.runQuery` / `ctx.runMutation` share the budget, as in Convex),
 * in the context it leased for the run.
 * - `usedMs`: user time spent in windows so far
 * - `outcome`: set the moment the run ends (inside a window, through a
 *   context-realm `then`), or when its budget runs out; later host events for
 *   it are ignored
 */
class Budget<M> {
  /** User time so far: windows' wall time minus the syscalls inside them. */
  usedMs = 0;
  /**
   * What the run is taken to hold (MAIN_HEAP_CHARGE_BYTES): what the heap
   * grew by during its windows, less what collections between them freed.
   */
  heapChargeBytes = 0;
  /** The heap at the end of its last window, or -1 before the first. */
  heapAtWindowEnd = -1;
  /** Time in syscalls during the current window. */
  syscallMs = 0;
  /**
   * When the syscall running now started, or -1. A watchdog that cuts a
   * syscall skips the `finally` that adds its time to `syscallMs`: the cut
   * counts it from here (`windowUserMs`), since host time is not the run's.
   */
  syscallSince = -1;
  /**
   * What the heap grew by inside syscalls during the current window: the
   * host's transaction state and result strings, which Convex keeps outside
   * the isolate's heap and so does not count against its 64 MiB.
   */
  syscallHeapBytes = 0;
  /** Wall time of its windows before the current one (LONG_RUN_AFTER_MS). */
  heldMs = 0;
  /** When the current window opened, in wall and in CPU time. */
  windowStart = 0;
  windowCpuStart = 0;
  outcome: Settled | null = null;
  /** The watchdog fired in this run's context, which is then never entered again. */
  terminated = false;
  /** Async syscalls issued and not yet settled on the host side. */
  outstanding = 0;
  polling = false;
  /** It settled inside its window: its context is released when the window ends (`#release`). */
  releaseAtWindowEnd = false;
  /** Called when `outstanding` drops to 0 (a dropped context's last drain, `#dispose`). */
  onIdle: (() => void) | null = null;
  /** Settles with `outcome`, for a caller that did not get it at once. */
  readonly promise: Promise<string>;
  #resolve!: (value: string) => void;
  #reject!: (error: Error) => void;

  constructor(
    readonly limitMs: number,
    readonly context: Leased<M>,
    readonly onSettled: (budget: Budget<M>) => void,
  ) {
    this.promise = new Promise<string>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // A run that settles at once is read from `outcome`, and nobody awaits this.
    this.promise.catch(() => undefined);
  }

  get settled(): boolean {
    return this.outcome !== null;
  }

  succeed(value: string): void {
    if (this.outcome !== null) return;
    this.outcome = { value };
    this.onSettled(this);
    this.#resolve(value);
  }

  fail(error: Error): void {
    if (this.outcome !== null) return;
    this.outcome = { error };
    this.onSettled(this);
    this.#reject(error);
  }
}

/** What the realm's factory must install in a new context. */
export type TimedHooks = {
  /** The `Convex` global the context must expose to its prelude. */
  wrapConvex(convex: ConvexGlobal): TimedConvexHost;
  /** Installs the entry hook on the context's global object. */
  installEntry(context: vm.Context): void;
  /** Evaluated in the context after the main prelude: routes async results into its own queue. */
  prelude: string;
};

export type TimedContext<M> = { context: vm.Context; modules: M };

/**
 * TIMED_PRELUDE's `then` in the context's realm: the reactions it registers
 * run in the context's own microtask queue, so a run that finishes inside a
 * window is known to have finished when the window returns.
 */
type Observe = <T>(
  promise: Promise<string>,
  onValue: (value: string) => T,
  onError: (error: unknown) => T,
) => Promise<T>;

type Leased<M> = TimedContext<M> & {
  observe: Observe;
  /** Set when the context is dropped: its syscalls fail from then on (`#dispose`). */
  dropped: { value: boolean };
};

/** A shared window (see `TimedRealm.shared`): when its watchdog fires. */
type SharedWindow = { deadline: number };

/**
 * The vm contexts for queries and mutations, whose every entry runs under a
 * deadline. Each top-level run leases a context of its own for its whole
 * duration (nested calls join their caller's), so functions that run at the
 * same time never share a microtask queue, a window or a termination: a
 * runaway terminated in its context takes no other function with it. Contexts
 * are evaluated on demand, at most MAX_CONTEXTS; a run that finds them all
 * leased waits for one.
 */
export class TimedRealm<M> {
  readonly #create: (hooks: TimedHooks) => TimedContext<M>;
  /** Contexts evaluated and not leased, most recently returned last. */
  readonly #idle: Leased<M>[] = [];
  /** Runs that settled inside their window, until it ends (`#release`). */
  readonly #releasing = new Set<Budget<M>>();
  /** Runs holding a context, until it is released (`#reconcile`). */
  readonly #holding = new Set<Budget<M>>();
  /** Contexts handed to a waiting run that has not started yet. */
  #handed = 0;
  /** Contexts alive: idle or leased. */
  #live = 0;
  /** Runs waiting for a context, first come first served. */
  readonly #waiting: ((context: Leased<M>) => void)[] = [];
  /** The budget whose window is running now (windows never nest). */
  #active: Budget<M> | null = null;
  #job: (() => void) | null = null;
  /** The shared window open now, if any. */
  #shared: SharedWindow | null = null;
  /**
   * The run `#run` is starting, until its first window is the active one: a
   * shared watchdog that fires in between leaves it holding its context with
   * no window to end it, so the cut ends it (`shared`).
   */
  #starting: Budget<M> | null = null;
  /** A dropped context's last drain is running (`#dispose`). */
  #draining = false;
  /** An empty context the shared windows enter (their body is host code). */
  readonly #driver: vm.Context;

  constructor(create: (hooks: TimedHooks) => TimedContext<M>) {
    this.#create = create;
    this.#driver = vm.createContext({});
    this.#installEntry(this.#driver);
    // Evaluated at once, so a bundle that fails to load fails here.
    this.#idle.push(this.#fresh());
    this.#live = 1;
  }

  /**
   * Runs `start` (which calls into the context's `modules`, e.g.
   * `modules.get("").modules.list.invokeQuery(args)`) with `limitMs` of
   * execution; inside a running function (a nested call made from a syscall)
   * it joins the caller's context, window and budget.
   */
  invoke(
    limitMs: number,
    start: (modules: M) => Promise<string>,
  ): Promise<string> {
    const result = this.invokeNow(limitMs, start);
    if (result instanceof Promise) return result;
    return "value" in result
      ? Promise.resolve(result.value)
      : Promise.reject(result.error);
  }

  /**
   * `invoke`, with the outcome handed back at once when the run ended inside
   * its first window (the usual case: syscalls answer synchronously), and a
   * promise otherwise. Lets a caller that runs several functions in one shared
   * window go on to the next without leaving it.
   */
  invokeNow(
    limitMs: number,
    start: (modules: M) => Promise<string>,
    handle?: RunHandle,
  ): Settled | Promise<string> {
    // A context promise is only ever observed through host-realm callbacks
    // here, whose reactions the host's own queue runs; a context-realm derived
    // promise (`.catch`, `await`) could be left waiting in the context's queue.
    const active = this.#active;
    if (active !== null) {
      return new Promise<string>((resolve, reject) => {
        start(active.context.modules).then(resolve, reject);
      });
    }
    const idle = this.#idle.pop();
    if (idle !== undefined) return this.#run(limitMs, idle, start, handle);
    if (this.#live < MAX_CONTEXTS) {
      this.#live++;
      let context: Leased<M>;
      try {
        context = this.#fresh();
      } catch (error) {
        this.#live--;
        return Promise.reject(
          error instanceof Error ? error : new Error(String(error)),
        );
      }
      return this.#run(limitMs, context, start, handle);
    }
    const waited = new Promise<Leased<M>>((resolve) =>
      this.#waiting.push(resolve),
    ).then((context) => {
      this.#handed--;
      if (handle?.stopped === true) {
        // Stopped while it waited: the context goes to the next one.
        this.#pass(context);
        return Promise.reject<string>(new HostCodeCut());
      }
      const result = this.#run(limitMs, context, start, handle);
      if (result instanceof Promise) return result;
      return "value" in result
        ? result.value
        : Promise.reject<string>(result.error);
    });
    // A caller whose shared window was cut may have lost this promise
    // (it stops the run, `stop`): its failure must not go unhandled.
    if (handle !== undefined) waited.catch(() => undefined);
    return waited;
  }

  /**
   * Runs `body` (host code that starts runs with `invokeNow`) under one
   * watchdog of `timeoutMs`: a run started inside it whose budget outlasts that
   * watchdog opens its first window without a watchdog of its own, and is
   * moved (MovedError) if it is still computing when the watchdog fires, so
   * `timeoutMs` stands for MAIN_SLICE_MS there (one costs
   * ~0.07 ms: Node starts and joins a thread per timed call), so a burst of
   * short functions pays for one. When the watchdog fires in a run's window,
   * that run fails as its own watchdog would have made it, and `body` is cut
   * short: the error is returned, and the caller must finish the run it was
   * in (its promise is not awaited by anyone). When it fires in host code
   * (HostCodeCut), what `body` was doing is lost wherever it was: a caller
   * that starts a call again first stops the run it had started for it
   * (`stop`). `body` must keep its own work between runs short and must not
   * be cut inside it: see `sharedTimeLeft`.
   */
  shared(timeoutMs: number, body: () => void): Error | null {
    if (this.#shared !== null || this.#active !== null) {
      body();
      return null;
    }
    this.#shared = { deadline: now() + timeoutMs };
    this.#job = body;
    const depth = asyncStackDepth();
    try {
      ENTER_SCRIPT.runInContext(this.#driver, {
        timeout: Math.max(1, Math.ceil(timeoutMs)),
        displayErrors: false,
      });
      return null;
    } catch (error) {
      if (
        (error as { code?: string }).code !== "ERR_SCRIPT_EXECUTION_TIMEOUT"
      ) {
        throw error;
      }
      // The termination unwound every frame in between, `finally` blocks too.
      restoreAsyncStack(depth);
      // (A method call: the type checker still narrows `#active` to null here.)
      const cut = this.#takeActive();
      const starting = this.#takeStarting();
      // Cut before its run's first window opened: the function never ran, and
      // the caller, told of a host-code cut, starts the call again.
      if (starting !== null && starting !== cut) {
        starting.terminated = true;
        starting.fail(new HostCodeCut());
      }
      // A run that settled in a window this cut interrupted, or whose window
      // ended just before it, before its context went back.
      for (const settled of this.#releasing) this.#discard(settled);
      if (cut === null || cut.settled) {
        // In host code, or in a run's window after the run settled: the run
        // is not to blame (a settled run's context, cut mid-drain, goes).
        if (cut !== null) this.#discard(cut);
        this.#reconcile();
        return new HostCodeCut();
      }
      this.#reconcile();
      cut.usedMs += windowUserMs(cut);
      // As its own watchdog would have: moved, unless its budget is spent.
      if (cut.usedMs < cut.limitMs) this.#moved(cut);
      else this.#terminated(cut);
      return (cut.outcome as { error: Error }).error;
    } finally {
      this.#shared = null;
      this.#job = null;
    }
  }

  /**
   * A nested `ctx.runQuery` / `ctx.runMutation` from a syscall of the running
   * window: starts the callee in the caller's context and returns a promise
   * of the context's realm, so that its result (`onValue` of the callee's, or
   * what `onError` throws) reaches the caller in the same microtask drain
   * rather than in a new window after the host's queue runs. Null outside a
   * window, or when the window's slice is over (a loop of nested calls still
   * lets the event loop turn): the caller then awaits `invoke`.
   */
  nestedNow(
    start: (modules: M) => Promise<string>,
    onValue: (value: string) => string,
    onError: (error: unknown) => never,
  ): Promise<string> | null {
    const active = this.#active;
    if (active === null || this.#sliceOver(active)) return null;
    return active.context.observe(
      start(active.context.modules),
      onValue,
      onError,
    );
  }

  #takeActive(): Budget<M> | null {
    const active = this.#active;
    this.#active = null;
    return active;
  }

  #takeStarting(): Budget<M> | null {
    const starting = this.#starting;
    this.#starting = null;
    return starting;
  }

  /**
   * Stops the run `handle` was filled in with, unless it has ended: its
   * context is dropped (never entered again) and its promise fails with
   * HostCodeCut. For a caller that starts a call again after a shared
   * window's cut (HostCodeCut): a run of the call still going would
   * otherwise go on with nobody waiting for it, and one whose first window
   * the cut ended before it scheduled its next look (it awaited a host
   * promise nothing tracks, `#pollIfIdle`) would hold its context for good:
   * with eight such, every query and mutation waited for a context forever.
   * A run still waiting for a context never starts (a cut after its caller
   * got the waiting promise left it to start later, unobserved, and its
   * failure was an unhandled rejection).
   */
  stop(handle: RunHandle): void {
    handle.stopped = true;
    const budget = handle.run as Budget<M> | null;
    if (budget === null || budget.settled) return;
    budget.terminated = true;
    budget.fail(new HostCodeCut());
  }

  /** Contexts held by runs that have not ended (a diagnostic: 0 when none runs). */
  get contextsHeld(): number {
    return this.#holding.size;
  }

  /** How long the open shared window has before its watchdog fires (Infinity outside one). */
  sharedTimeLeft(): number {
    return this.#shared === null ? Infinity : this.#shared.deadline - now();
  }

  #run(
    limitMs: number,
    context: Leased<M>,
    start: (modules: M) => Promise<string>,
    handle: RunHandle | undefined,
  ): Settled | Promise<string> {
    const budget = new Budget(limitMs, context, (settled) =>
      this.#release(settled),
    );
    if (handle !== undefined) handle.run = budget;
    this.#starting = budget;
    this.#holding.add(budget);
    this.#window(budget, () => {
      // Settles with the run (both handlers return): nothing awaits it.
      void context.observe(
        start(context.modules),
        (value) => budget.succeed(value),
        (error) => budget.fail(error as Error),
      );
    });
    this.#starting = null;
    return budget.outcome ?? budget.promise;
  }

  /**
   * A run is over: its context goes to the next waiting run, unless it was
   * terminated. A run that settles inside its window keeps the context until
   * the window ends: a watchdog that fires in between (in host code after the
   * run, on a stalled machine) leaves the context's microtask drain cut short,
   * so it is thrown away (`#discard`) rather than reused.
   */
  #release(budget: Budget<M>): void {
    if (this.#active === budget && !budget.terminated) {
      budget.releaseAtWindowEnd = true;
      this.#releasing.add(budget);
      return;
    }
    budget.releaseAtWindowEnd = false;
    this.#releasing.delete(budget);
    if (!this.#holding.delete(budget)) return;
    let context: Leased<M> | undefined = budget.context;
    if (budget.terminated) {
      this.#live--;
      this.#dispose(budget);
      context = undefined;
    }
    this.#pass(context);
  }

  /** A context freed (or, if undefined, a fresh one) to the next waiting run, or to the idle list. */
  #pass(context: Leased<M> | undefined): void {
    const next = this.#waiting.shift();
    if (next === undefined) {
      if (context !== undefined) this.#idle.push(context);
      return;
    }
    if (context === undefined) {
      this.#live++;
      try {
        context = this.#fresh();
      } catch {
        // The bundle evaluated before, so it evaluates again; should it not,
        // the waiting run retries through `invoke` when the next run ends.
        this.#live--;
        this.#waiting.unshift(next);
        return;
      }
    }
    next(context);
    this.#handed++;
  }

  /**
   * After a watchdog cut host code short: a context it left between a run and
   * the idle list (or a waiting run) is counted free again, and runs waiting
   * for one get fresh contexts. Counted by what holds contexts, since the
   * bookkeeping that was cut cannot be trusted; a context handed over in the
   * cut may be counted twice for a while, which only lends one more.
   */
  #reconcile(): void {
    const held = this.#idle.length + this.#holding.size + this.#handed;
    if (this.#live <= held) return;
    this.#live = held;
    while (this.#waiting.length > 0 && this.#live < MAX_CONTEXTS) {
      this.#live++;
      let context: Leased<M>;
      try {
        context = this.#fresh();
      } catch {
        this.#live--;
        return;
      }
      this.#waiting.shift()!(context);
      this.#handed++;
    }
  }

  #fresh(): Leased<M> {
    const dropped = { value: false };
    const created = this.#create({
      wrapConvex: (convex) => this.#wrapConvex(convex, dropped),
      installEntry: (context) => this.#installEntry(context),
      prelude: TIMED_PRELUDE,
    });
    const observe = (created.context as Record<string, unknown>)[
      OBSERVE_HOOK
    ] as Observe;
    return { ...created, observe, dropped };
  }

  /**
   * A context is dropped (its run was terminated or moved). What is still in
   * its microtask queue would keep it alive for good, with all it holds (a
   * moved run's 64 MB): V8 treats queued microtasks as roots, and this queue
   * is drained only when the context is entered. So, once no host promise of
   * its run is pending (a later one would queue more), it is entered one last
   * time with DROP_DRAIN_MS: its syscalls are now cut off (DROPPED_MESSAGE),
   * so what its continuations do reaches nothing and rejects nothing, and a
   * continuation that does not end is terminated inside the drain, which
   * empties the queue (V8's `RunMicrotasks` discards the rest on
   * termination).
   */
  #dispose(budget: Budget<M>): void {
    const { context, dropped } = budget.context;
    if (dropped.value) return;
    dropped.value = true;
    const drain = () => {
      if (budget.outstanding > 0) return;
      const depth = asyncStackDepth();
      this.#draining = true;
      try {
        DRAIN_SCRIPT.runInContext(context, {
          timeout: DROP_DRAIN_MS,
          displayErrors: false,
        });
      } catch (error) {
        if (
          (error as { code?: string }).code === "ERR_SCRIPT_EXECUTION_TIMEOUT"
        )
          restoreAsyncStack(depth);
      } finally {
        this.#draining = false;
      }
    };
    budget.onIdle = () => setImmediate(drain);
    // Outside the window or drain that dropped it.
    setImmediate(drain);
  }

  #installEntry(context: vm.Context): void {
    Object.defineProperty(context, ENTER_HOOK, {
      value: () => {
        const job = this.#job;
        this.#job = null;
        job?.();
      },
      enumerable: false,
    });
  }

  /** Runs `job` in the context with the budget's remaining time, then drains its microtasks. */
  #window(budget: Budget<M>, job: () => void): void {
    if (budget.settled || budget.terminated) return;
    const remaining = budget.limitMs - budget.usedMs;
    if (remaining <= 0) {
      this.#terminated(budget);
      return;
    }
    const watchdog = Math.min(remaining, MAIN_SLICE_MS);
    // Inside a shared window, a run that has more time than its watchdog
    // needs no watchdog of its own: the shared one, short, also moves it.
    const shared = this.#shared;
    const watched =
      shared === null || remaining < shared.deadline - now()
        ? { timeout: Math.max(1, Math.ceil(watchdog)), displayErrors: false }
        : { displayErrors: false };
    // The window's clocks are set before it becomes the active one: a shared
    // watchdog that fires from here on charges the run from them (`shared`),
    // and stale ones (0 before a first window) would charge it for the
    // process's whole life.
    const firstWindow = budget.windowStart === 0;
    budget.windowStart = now();
    budget.windowCpuStart = windowCpuStartMs(firstWindow);
    budget.syscallMs = 0;
    budget.syscallSince = -1;
    budget.syscallHeapBytes = 0;
    this.#job = job;
    this.#active = budget;
    this.#starting = null;
    const depth = asyncStackDepth();
    const heapAtStart = heapBytes();
    let heapNow = heapAtStart;
    // The heap shrank since the run's last window: a collection freed
    // garbage, its own among it, which no longer counts against it.
    if (budget.heapAtWindowEnd > heapAtStart)
      budget.heapChargeBytes = Math.max(
        0,
        budget.heapChargeBytes - (budget.heapAtWindowEnd - heapAtStart),
      );
    let expired = false;
    try {
      ENTER_SCRIPT.runInContext(budget.context.context, watched);
    } catch (error) {
      if (
        (error as { code?: string }).code === "ERR_SCRIPT_EXECUTION_TIMEOUT"
      ) {
        restoreAsyncStack(depth);
        expired = true;
      } else {
        budget.fail(error as Error);
      }
    } finally {
      this.#active = null;
      this.#job = null;
      // A run that ended in this window has no use for its time any more
      // (and measuring it costs a CPU reading, see FIRST_WINDOW_CPU_READING_MS).
      if (expired || !budget.settled) {
        budget.heldMs += now() - budget.windowStart;
        budget.usedMs += windowUserMs(budget);
        heapNow = heapBytes();
        // Signed: a collection inside the window frees what it held too.
        budget.heapChargeBytes = Math.max(
          0,
          budget.heapChargeBytes +
            (heapNow - heapAtStart - budget.syscallHeapBytes),
        );
        budget.heapAtWindowEnd = heapNow;
      }
    }
    if (!expired) {
      if (budget.releaseAtWindowEnd) this.#release(budget);
      if (
        !budget.settled &&
        (budget.heapChargeBytes > MAIN_HEAP_CHARGE_BYTES ||
          heapNow > MAIN_HEAP_BACKSTOP_BYTES)
      ) {
        // Its continuations stay queued in the context, which goes with it.
        this.#moved(budget, true);
        return;
      }
      this.#pollIfIdle(budget);
    } else if (budget.settled) this.#discard(budget);
    else if (watchdog < remaining) this.#moved(budget);
    else this.#terminated(budget);
  }

  /** A settled run whose window the watchdog cut: its context is never entered again. */
  #discard(budget: Budget<M>): void {
    budget.terminated = true;
    if (budget.releaseAtWindowEnd) this.#release(budget);
  }

  #moved(budget: Budget<M>, forMemory = false): void {
    // Terminated all the same: the context is never entered again.
    budget.terminated = true;
    budget.fail(new MovedError(budget.usedMs, forMemory));
  }

  #terminated(budget: Budget<M>): void {
    // The context may still hold the runaway's continuations: never enter it again.
    budget.terminated = true;
    budget.usedMs = budget.limitMs;
    // Convex's limit, also for a run that had less left (a rerun).
    budget.fail(new UserTimeoutError(USER_TIMEOUT_MS));
  }

  /**
   * A function still pending with nothing tracked in flight (`#track`)
   * awaits some other host promise (a Blob's): its continuation sits in the
   * context's queue, so look again after the event loop turns. A promise
   * that never settles keeps costing windows until the budget runs out.
   */
  #pollIfIdle(budget: Budget<M>): void {
    if (budget.settled || budget.outstanding > 0 || budget.polling) return;
    budget.polling = true;
    setImmediate(() => {
      budget.polling = false;
      this.#window(budget, () => undefined);
    });
  }

  /**
   * The host side of the context's `Convex` (TIMED_PRELUDE wraps it): an async
   * syscall runs at once, inside the window, and returns its result as a
   * string when it has one; otherwise a promise, and when that settles after
   * the window has ended, a new window delivers it.
   */
  #wrapConvex(
    convex: ConvexGlobal,
    dropped: { value: boolean },
  ): TimedConvexHost {
    /**
     * Runs a host syscall, charging its time to the window's syscall time and
     * leaving what the host allocated for it out of the run's heap charge.
     */
    const timed = <T>(run: () => T): T => {
      if (dropped.value) {
        // V8 wakes a waiting thread to terminate it (the drain's watchdog).
        if (this.#draining) Atomics.wait(DRAIN_WAIT, 0, 0, 4 * DROP_DRAIN_MS);
        throw new Error(DROPPED_MESSAGE);
      }
      const budget = this.#active;
      if (budget === null) return run();
      const started = now();
      const heapBefore = heapBytes();
      // (A nested call's syscalls run inside its caller's `1.0/runUdf`.)
      const outer = budget.syscallSince;
      if (outer < 0) budget.syscallSince = started;
      try {
        return run();
      } finally {
        budget.syscallSince = outer;
        budget.syscallMs += now() - started;
        // A collection inside the syscall makes this negative: it hid growth
        // from the window as well, so nothing is taken off for it.
        budget.syscallHeapBytes += Math.max(0, heapBytes() - heapBefore);
      }
    };
    return {
      digestNow,
      syscall: (op, args) => timed(() => convex.syscall(op, args)),
      jsSyscall: (op, args) => timed(() => convex.jsSyscall(op, args)),
      asyncSyscall: (op, args, delivered) => {
        // A fresh promise each time: one shared by every dropped context would
        // hold each of them through the reactions registered on it.
        if (dropped.value) return new Promise<string>(() => undefined);
        let result: string | Promise<string>;
        try {
          result = timed(
            () =>
              convex.asyncSyscallNow?.(op, args) ??
              convex.asyncSyscall(op, args),
          );
        } catch (error) {
          // Already rejected: the context's callback runs in this window.
          return Promise.reject(
            error instanceof Error ? error : new Error(String(error)),
          );
        }
        // A context-realm promise (`nestedNow`) settles in this drain.
        if (typeof result !== "string" && !(result instanceof Promise))
          return result;
        const budget = this.#active;
        if (budget === null) return result;
        if (typeof result === "string") {
          if (!this.#sliceOver(budget)) return result;
          // Database time inside a window counts against its watchdog, so a
          // long window is ended here and the result delivered in a new one,
          // with the watchdog set from user time only.
          const value = result;
          // In a later turn, as the request paces it (`RequestContext.pace`).
          result = new Promise<string>((resolve) => {
            const resume = () => resolve(value);
            if (convex.later) convex.later(resume);
            else setImmediate(resume);
          });
        }
        this.#track(budget, result, delivered);
        return result;
      },
      pending: (promise, delivered) => {
        if (dropped.value) {
          // As a dropped context's async syscall: never settles, so its
          // continuation stops here rather than queue, after the last drain,
          // in a queue never drained again (which kept the context alive).
          promise.catch(() => undefined);
          return new Promise<never>(() => undefined);
        }
        const budget = this.#active;
        if (budget !== null) this.#track(budget, promise, delivered);
        return promise;
      },
    };
  }

  /**
   * A host promise the run awaits (an async syscall's, Web Crypto's): counted
   * as outstanding until it settles, when a new window delivers its result
   * unless one already did. A dropped context's last drain waits for the
   * count to reach 0 (`#dispose`): a result that settled after it would queue
   * a continuation in a queue never drained again, which would keep the
   * context alive for good.
   */
  #track(
    budget: Budget<M>,
    promise: Promise<unknown>,
    delivered: () => boolean,
  ): void {
    budget.outstanding++;
    const settle = () => {
      budget.outstanding--;
      if (budget.outstanding === 0) budget.onIdle?.();
      if (budget.settled) return;
      if (!delivered()) this.#window(budget, () => undefined);
      else this.#pollIfIdle(budget);
    };
    promise.then(settle, settle);
  }

  /** Whether the current window has run long enough to be split at this syscall. */
  #sliceOver(budget: Budget<M>): boolean {
    const remaining = budget.limitMs - budget.usedMs;
    const slice =
      budget.heldMs < LONG_RUN_AFTER_MS ? WINDOW_SLICE_MS : LONG_RUN_SLICE_MS;
    return (
      performance.now() - budget.windowStart > Math.min(slice, remaining / 4)
    );
  }
}

/** The `Convex` object a timed context's prelude receives (and wraps for the bundle). */
export type TimedConvexHost = {
  /** `subtle.digest`'s result when it can be computed in place (digest.ts). */
  digestNow(algorithm: unknown, data: unknown): ArrayBuffer | undefined;
  syscall(op: string, jsonArgs: string): string;
  jsSyscall(op: string, args: Record<string, unknown>): unknown;
  asyncSyscall(
    op: string,
    jsonArgs: string,
    delivered: () => boolean,
  ): string | Promise<string>;
  /** A host promise the run awaits (Web Crypto's), returned as it is (`#track`). */
  pending<T>(promise: Promise<T>, delivered: () => boolean): Promise<T>;
};

/**
 * Runs in a timed context after the main prelude. Results of host promises are
 * taken with `then` callbacks created here, so their reactions are queued on
 * this context's microtask queue and run in the current window; `delivered`
 * tells the host whether that already happened.
 */
const TIMED_PRELUDE = `
"use strict";
(() => {
  const host = globalThis.Convex;
  const ContextPromise = globalThis.Promise;
  const hostAsync = host.asyncSyscall;
  const hostPending = host.pending;
  const adopt = (start) => {
    let delivered = false;
    const result = start(() => delivered);
    if (typeof result === "string") return ContextPromise.resolve(result);
    // A nested call settling in this window (\`TimedRealm.nestedNow\`).
    if (result instanceof ContextPromise) return result;
    return new ContextPromise((resolve, reject) => {
      result.then(
        (value) => { delivered = true; resolve(value); },
        (error) => { delivered = true; reject(error); },
      );
    });
  };
  Object.defineProperty(globalThis, "${OBSERVE_HOOK}", {
    value: (promise, onValue, onError) =>
      promise.then((value) => onValue(value), (error) => onError(error)),
  });
  globalThis.Convex = Object.freeze({
    syscall: (op, args) => host.syscall(op, args),
    jsSyscall: (op, args) => host.jsSyscall(op, args),
    asyncSyscall: (op, args) => adopt((delivered) => hostAsync(op, args, delivered)),
  });
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (subtle) {
    for (const name of Object.keys(subtle)) {
      const method = subtle[name];
      if (typeof method !== "function") continue;
      subtle[name] =
        name === "digest"
          ? (algorithm, data) => {
              // Computed in place, it resolves in this window's drain.
              const hash = host.digestNow(algorithm, data);
              return hash === undefined
                ? adopt((delivered) => hostPending(method(algorithm, data), delivered))
                : ContextPromise.resolve(hash);
            }
          : (...args) => adopt((delivered) => hostPending(method(...args), delivered));
    }
  }
})();
`;
