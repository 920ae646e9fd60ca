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
 * - Each window's wall time is charged to the budget, including the database
 *   work syscalls do inside it: on one thread, that work holds other clients
 *   just as user code does. (Convex excludes database time; a function that
 *   reads its 32,000-document limit still fits well within 1 s here.)
 * - A terminated context may still hold the runaway's queued continuations, so
 *   it is thrown away and the bundle is evaluated again into a fresh one, as
 *   Convex drops an isolate after a termination ("If the isolate is terminated,
 *   it should be dropped and a new isolate should be created", ibid.).
 * - A termination that lands inside the context's microtask drain leaves the
 *   promise hooks' `before` without its `after`, and Node aborts the process at
 *   the next callback ("async hook stack has become corrupted"). After a
 *   termination the async-id stack is popped back to its depth at entry,
 *   through Node's `async_wrap` binding (the one internal this module uses).
 * - One watchdog costs ~0.1 ms (Node starts a thread per timed call), which is
 *   why syscalls resolve in the same window rather than each opening one.
 *
 * Why not worker threads that can be terminated: every syscall, including the
 * synchronous ones (`queryStream`, `normalizeId`), would have to cross threads,
 * blocking on `Atomics.wait`, and the database would live on the main thread
 * anyway; the serial executor already makes other clients wait for a running
 * query, so a second thread would not let them in any sooner.
 *
 * Actions run in a normal context (timers, fetch) with a wall-clock limit: an
 * action's synchronous loop is not stopped before it yields.
 *
 * Usage:
 *   const realm = new TimedRealm((wrap) => evaluate(bundle, wrap));
 *   const json = await realm.invoke(USER_TIMEOUT_MS, () => fn.invokeQuery(args));
 */
import vm from "node:vm";
import type { ConvexGlobal } from "./syscalls.ts";

/** `DATABASE_UDF_USER_TIMEOUT` (convex-backend `crates/common/src/knobs.rs`). */
export const USER_TIMEOUT_MS = 1_000;
/** `ACTIONS_USER_TIMEOUT_SECS`: 10 minutes. */
export const ACTION_TIMEOUT_MS = 600_000;

/** The name under which a timed context finds the host's entry hook. */
const ENTER_HOOK = "__localBackendEnter";
const ENTER_SCRIPT = new vm.Script(`globalThis.${ENTER_HOOK}()`, {
  filename: "local-backend:enter",
});

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

/** A function that ran past its limit; the text is Convex's. */
export class UserTimeoutError extends Error {
  constructor(limitMs: number) {
    super(
      `Function execution timed out (maximum duration: ${formatDuration(limitMs)})`,
    );
    this.name = "UserTimeoutError";
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

/**
 * One top-level function run and everything it calls in the same transaction
 * (nested `ctx.runQuery` / `ctx.runMutation` share the budget, as in Convex).
 * - `usedMs`: wall time spent in windows so far
 * - `settled`: the result was delivered or the budget ran out; later host
 *   events for it are ignored
 */
class Budget {
  usedMs = 0;
  settled = false;
  /** Async syscalls issued and not yet settled on the host side. */
  outstanding = 0;
  polling = false;

  constructor(
    readonly limitMs: number,
    readonly fail: (error: Error) => void,
  ) {}
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

/** A vm context for queries and mutations whose every entry runs under a deadline. */
export class TimedRealm<M> {
  readonly #create: (hooks: TimedHooks) => TimedContext<M>;
  #current: TimedContext<M> | null = null;
  /** The budget whose window is running now (windows never nest). */
  #active: Budget | null = null;
  #job: (() => void) | null = null;

  constructor(create: (hooks: TimedHooks) => TimedContext<M>) {
    this.#create = create;
    this.#current = this.#fresh();
  }

  /** The bundle's modules, evaluated again first if the last context was terminated. */
  get modules(): M {
    this.#current ??= this.#fresh();
    return this.#current.modules;
  }

  /**
   * Runs `start` (which calls into the context, e.g. `fn.invokeQuery(args)`)
   * with `limitMs` of execution; inside a running function (a nested call
   * made from a syscall) it joins the caller's window and budget.
   */
  invoke(limitMs: number, start: () => Promise<string>): Promise<string> {
    // A context promise is only ever observed through host-realm callbacks,
    // whose reactions the host's own queue runs; a context-realm derived
    // promise (`.catch`, `await`) could be left waiting in the context's queue.
    if (this.#active !== null) {
      return new Promise<string>((resolve, reject) => {
        start().then(resolve, reject);
      });
    }
    return new Promise<string>((resolve, reject) => {
      const budget = new Budget(limitMs, (error) => {
        budget.settled = true;
        reject(error);
      });
      this.#window(budget, () => {
        start().then(
          (value) => {
            budget.settled = true;
            resolve(value);
          },
          (error: unknown) => budget.fail(error as Error),
        );
      });
    });
  }

  #fresh(): TimedContext<M> {
    return this.#create({
      wrapConvex: (convex) => this.#wrapConvex(convex),
      installEntry: (context) => {
        Object.defineProperty(context, ENTER_HOOK, {
          value: () => {
            const job = this.#job;
            this.#job = null;
            job?.();
          },
          enumerable: false,
        });
      },
      prelude: TIMED_PRELUDE,
    });
  }

  /** Runs `job` in the context with the budget's remaining time, then drains its microtasks. */
  #window(budget: Budget, job: () => void): void {
    if (budget.settled) return;
    const current = this.#current;
    if (current === null) return;
    const remaining = budget.limitMs - budget.usedMs;
    if (remaining <= 0) {
      this.#terminated(budget);
      return;
    }
    this.#job = job;
    this.#active = budget;
    const depth = asyncStackDepth();
    const started = performance.now();
    try {
      ENTER_SCRIPT.runInContext(current.context, {
        timeout: Math.max(1, Math.ceil(remaining)),
        displayErrors: false,
      });
    } catch (error) {
      if (
        (error as { code?: string }).code === "ERR_SCRIPT_EXECUTION_TIMEOUT"
      ) {
        restoreAsyncStack(depth);
        this.#terminated(budget);
        return;
      }
      budget.fail(error as Error);
    } finally {
      this.#active = null;
      this.#job = null;
      budget.usedMs += performance.now() - started;
    }
    this.#pollIfIdle(budget);
  }

  #terminated(budget: Budget): void {
    // The context may still hold the runaway's continuations: never enter it again.
    this.#current = null;
    budget.usedMs = budget.limitMs;
    budget.fail(new UserTimeoutError(budget.limitMs));
  }

  /**
   * A function still pending with no syscall in flight awaits some other host
   * promise (Web Crypto, a Blob): its continuation sits in the context's queue,
   * so look again after the event loop turns. A promise that never settles
   * keeps costing windows until the budget runs out.
   */
  #pollIfIdle(budget: Budget): void {
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
  #wrapConvex(convex: ConvexGlobal): TimedConvexHost {
    return {
      syscall: (op, args) => convex.syscall(op, args),
      jsSyscall: (op, args) => convex.jsSyscall(op, args),
      asyncSyscall: (op, args, delivered) => {
        let result: string | Promise<string>;
        try {
          result =
            convex.asyncSyscallNow?.(op, args) ?? convex.asyncSyscall(op, args);
        } catch (error) {
          // Already rejected: the context's callback runs in this window.
          return Promise.reject(
            error instanceof Error ? error : new Error(String(error)),
          );
        }
        const budget = this.#active;
        if (typeof result === "string" || budget === null) return result;
        budget.outstanding++;
        const settle = () => {
          budget.outstanding--;
          if (budget.settled) return;
          if (!delivered()) this.#window(budget, () => undefined);
          else this.#pollIfIdle(budget);
        };
        result.then(settle, settle);
        return result;
      },
    };
  }
}

/** The `Convex` object a timed context's prelude receives (and wraps for the bundle). */
export type TimedConvexHost = {
  syscall(op: string, jsonArgs: string): string;
  jsSyscall(op: string, args: Record<string, unknown>): unknown;
  asyncSyscall(
    op: string,
    jsonArgs: string,
    delivered: () => boolean,
  ): string | Promise<string>;
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
  const adopt = (start) => {
    let delivered = false;
    const result = start(() => delivered);
    if (typeof result === "string") return ContextPromise.resolve(result);
    return new ContextPromise((resolve, reject) => {
      result.then(
        (value) => { delivered = true; resolve(value); },
        (error) => { delivered = true; reject(error); },
      );
    });
  };
  globalThis.Convex = Object.freeze({
    syscall: (op, args) => host.syscall(op, args),
    jsSyscall: (op, args) => host.jsSyscall(op, args),
    asyncSyscall: (op, args) => adopt((delivered) => hostAsync(op, args, delivered)),
  });
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (subtle) {
    for (const name of Object.keys(subtle)) {
      const method = subtle[name];
      if (typeof method === "function") {
        subtle[name] = (...args) => adopt(() => method(...args));
      }
    }
  }
})();
`;
