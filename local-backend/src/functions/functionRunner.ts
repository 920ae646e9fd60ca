/**
 * Runs the app's queries, mutations and actions: resolves a function path,
 * enforces visibility and function type, validates arguments and return values,
 * runs the function in the isolate with its transaction, and reports the
 * outcome (value, ConvexError data, uncaught error, log lines); `sync/outcomes.ts`
 * puts it on the wire.
 *
 * Concurrency. Every commit (mutations, the scheduler's and crons'
 * bookkeeping, file storage, a build switch) happens in a slot of the writer
 * executor, one at a time. A mutation starts in a slot and, when it ends
 * there (nearly all do), commits in it, serializable by construction (as
 * convex-test's `TransactionManager`); one that awaits or computes for long
 * leaves the slot and is validated against the commits made meanwhile before
 * it commits in a later one (`#conclude`: OCC, as Convex's committer checks a
 * mutation's read set), so it holds no other client's mutation.
 *
 * Queries run concurrently with everything, each in a vm context of its own
 * (deadline.ts), optimistically: a query reads the
 * latest committed state as it goes and, when it finishes, is checked against
 * the commits made meanwhile (commitLog.ts). Valid, its outcome (value, error
 * or timeout) is exactly that of a run at the current timestamp; conflicted,
 * it is discarded and run again, and after MAX_OPTIMISTIC_RUNS conflicts (or
 * one of a long run) it runs at a pinned snapshot (`pinSnapshot`), where
 * commits land beside it without touching what it reads, as every query in
 * Convex runs at one snapshot timestamp; only when no snapshot can be pinned
 * does it run on the writer executor, where no commit can land. A runaway
 * query therefore holds no other client, and a subscription update validates
 * each result at the moment it files the read set (`runQuery`'s `onValid`);
 * one that cannot be validated is left to its socket, which runs its whole
 * query set at a snapshot (sync/syncSession.ts).
 * Actions run outside the executor; their `runQuery` / `runMutation` calls take
 * the same paths as client requests.
 *
 * Durability: a commit returns before it is on disk (group commit,
 * storage/database.ts). `runMutation`, `runQuery` and `runSystem` resolve only
 * once the latest commit their outcome may reflect is durable, outside the
 * executor slot, so the next function runs meanwhile and joins the same fsync.
 * `executeMutation` resolves as soon as the mutation committed, for callers
 * that hold the answer back themselves until `db.durable(observedTs)`.
 *
 * Usage:
 *   const runner = new FunctionRunner(db);
 *   runner.setIsolate(isolate);
 *   const outcome = await runner.runMutation({ path: "messages:send", args });
 */
import { randomBytes } from "node:crypto";

/** Request IDs: a per-process random prefix and a counter (unique, and cheaper than 8 random bytes each). */
const REQUEST_ID_PREFIX = randomBytes(4).toString("hex");
let requestCounter = 0;
import { jsonToConvex, type JSONValue, type Value } from "convex/values";
import type { Database, ReadSnapshot } from "../storage/database.ts";
import {
  type Isolate,
  invokeUdf,
  type RegisteredFunction,
  type UdfCall,
} from "./isolate.ts";
import { ANONYMOUS, type Identity, isAdmin } from "./authentication.ts";
import {
  type InWindow,
  type NestedCalls,
  type Pace,
  type RequestContext,
  requestStorage,
  type UdfType,
} from "./syscalls.ts";
import { resolveCommitTsJson } from "../values/wire.ts";
import type { ReadSet } from "../query/readSet.ts";
import {
  ACTION_TIMEOUT_MS,
  HostCodeCut,
  MAIN_SLICE_MS,
  MovedError,
  type RunHandle,
  type Settled,
  USER_TIMEOUT_MS,
  UserTimeoutError,
  withWallClockLimit,
} from "./deadline.ts";
import { argumentsSizeError, resultSizeError } from "./limits.ts";
import { StartupGate } from "./startupGate.ts";
import {
  clientErrorMessage,
  httpActionErrorBody,
  type JsError,
  jsError,
  SyscallConvexError,
  SystemError,
  thrownParts,
  uncaught,
} from "./errors.ts";
import { Transaction } from "./transaction.ts";
import { CommitLog, type CommitMark, CommitWatch } from "./commitLog.ts";
import {
  ComponentError,
  type ComponentFunctionPath,
  type ComponentTree,
  type FunctionAddress,
  localTableName,
  ROOT_COMPONENT,
} from "./components.ts";

/** convex-backend `bad_admin_key_error(None)`: what a non-admin caller gets for a component's function. */
const BAD_DEPLOY_KEY =
  "BadDeployKey: The provided deploy key was invalid for this deployment. Double check that the environment this key was generated for matches the desired deployment.";
import {
  hasValidator,
  validateArgs,
  validateReturns,
} from "../values/validators.ts";
import { rememberJson } from "../values/serialized.ts";

export type FunctionSuccess = {
  status: "success";
  value: JSONValue;
  logLines: string[];
};
export type FunctionFailure = {
  status: "error";
  /** What clients get: "[Request ID: …] Server Error\n" then the trace (errors.ts). */
  errorMessage: string;
  /** The error without the request: what callers, scheduled jobs and HTTP bodies carry. */
  error: JsError;
  /** Present only for ConvexError, as Convex JSON (convex 1.48 `protocol.ts`). */
  errorData?: JSONValue;
  logLines: string[];
};
export type FunctionOutcome = FunctionSuccess | FunctionFailure;

export type QueryOutcome = FunctionOutcome & {
  /** The journal to send with this result (the page's end cursor, or null). */
  journal: string | null;
  /** What the run read: a commit that overlaps it re-runs the query. */
  readSet: ReadSet;
  ts: bigint;
};

export type MutationOutcome = FunctionOutcome & { ts: bigint | null };

/** A query's outcome at a pinned snapshot (`FunctionRunner.pinSnapshot`). */
export type SnapshotOutcome = QueryOutcome & {
  /** The run read the snapshot's timestamp, which every later commit changes. */
  readTimestamp: boolean;
};

/** `FunctionRunner.pinSnapshot`: queries run at one pinned snapshot. */
export type PinnedSnapshot = {
  /** The snapshot's timestamp: every outcome of `run` is the query's at it. */
  readonly ts: bigint;
  /** Held too long: the WAL reached its cap behind it (`ReadSnapshot.expired`); pin a newer one. */
  readonly expired: boolean;
  run(
    request: QueryRequest,
    visibility?: Visibility,
  ): Promise<SnapshotOutcome | null>;
  /**
   * A watch over outcomes of `run`, for the commits after the snapshot:
   * `from`, a watch of an older snapshot just checked, carried over.
   */
  watch<T>(from?: CommitWatch<T>): CommitWatch<T>;
  release(): void;
};

/** A mutation that ran, before it is durable (`executeMutation`). */
export type ExecutedMutation = MutationOutcome & {
  /** The latest commit the outcome may reflect (its own, or the snapshot it
   *  read): it may be shown to the caller once `db.durable(observedTs)` resolves. */
  observedTs: bigint;
};

export type QueryRequest = {
  path: string;
  args: JSONValue;
  journal?: string | null;
  /** The component the function belongs to; "" (the app) by default. */
  componentPath?: string;
  /** Who calls; anonymous when absent. An admin may call internal functions. */
  identity?: Identity;
  /** How a long run goes on in later turns (`RequestContext.pace`); the next turn when absent. */
  pace?: Pace;
  /**
   * Run it in an isolate worker when one is idle (offThread.ts): its last
   * result was large (LARGE_RESULT_CHARS), and decoding a page and encoding
   * the result in the function's runtime held the main thread for 30-40 ms.
   */
  offMainThread?: boolean;
};
export type MutationRequest = {
  path: string;
  args: JSONValue;
  componentPath?: string;
  identity?: Identity;
  /** The client session and request id, for exactly-once execution across reconnects. */
  dedupe?: { sessionId: string; requestId: number } | undefined;
  /** A scheduled run: the job's state changes commit with the mutation (scheduler.ts). */
  job?: MutationJob;
};

/**
 * How the scheduler runs a mutation exactly once: its job document moves to
 * its final state in the same commit as the function's writes, or, when the
 * function fails, in a commit of its own (convex-backend
 * `application/src/scheduled_jobs/mod.rs` `handle_mutation`).
 */
export type MutationJob = {
  /** The `_scheduled_functions` job, if this is one (crons have none). */
  id?: string;
  /** In the run's transaction before the function; false skips the run (canceled meanwhile). */
  begin(tx: Transaction): boolean;
  /** In the run's transaction after success. */
  succeed(tx: Transaction): void;
  /** In a fresh transaction after a failure; `error` is the message without request id. */
  fail(tx: Transaction, error: string): void;
};

type Visibility = "public" | "any";

/** What a finished top-level function reports, for the backend's own log. */
export type FunctionRunEvent = {
  udfType: UdfType;
  path: string;
  logLines: readonly string[];
  /** An uncaught error with its stack; absent on success and for expected
   *  failures (bad arguments echo values, which may be secrets). */
  uncaughtError?: string;
};

/**
 * Optimistic runs of a query before it runs at a snapshot (or, when none can
 * be pinned, with commits held off): a query that keeps overlapping commits
 * (a long scan of a busy table) still finishes.
 */
const MAX_OPTIMISTIC_RUNS = 3;
/**
 * A conflicted run at least this long goes on at a snapshot at once: it
 * spanned many commits, and running it again the same way would too.
 */
const LONG_CONFLICTED_RUN_MS = 20;
/**
 * A query result of this much JSON text is decoded and checked in a turn of
 * its own, when its request is paced (the subscription hub's): decoding 2.4
 * MiB takes ~15 ms, after the function spent as long producing it. The hub
 * runs a query whose last result was this large off the main thread
 * (`QueryRequest.offMainThread`).
 */
export const LARGE_RESULT_CHARS = 256 * 1024;

/**
 * How long one shared window keeps starting mutations (their first windows
 * share its watchdog): short, so the event loop turns between bursts.
 */
const MUTATION_WINDOW_MS = 5;

/**
 * A commit runs inside a shared window only when it is small, with at least
 * COMMIT_MARGIN_MS left on the window's watchdog; any other commits after the
 * window. A watchdog that fires inside a commit costs a rerun or a recovery
 * (`Database.recoverCut`), and one that fires in a long commit holds the
 * window's other mutations behind it. Measured (the fixture's `limits:fill`):
 * 1,000 documents of 100 bytes commit in ~96 ms, 15 of 1 MB in ~113 ms,
 * 16,000 in ~556 ms, so 64 documents and 256 KiB take a few ms.
 */
const INLINE_COMMIT_MAX_DOCUMENTS = 64;
const INLINE_COMMIT_MAX_BYTES = 256 * 1024;
const COMMIT_MARGIN_MS = 25;

/**
 * A shared window's watchdog. A mutation that computes synchronously in the
 * window has no watchdog of its own, so this is also what moves it off the
 * main thread (deadline.ts MovedError): long enough for the window that starts
 * mutations, MAIN_SLICE_MS of the last one started and the commits that
 * follow it (COMMIT_MARGIN_MS), and no longer, since every other client waits
 * for it.
 */
const SHARED_WINDOW_MS = MUTATION_WINDOW_MS + MAIN_SLICE_MS + COMMIT_MARGIN_MS;

/** A mutation waiting for the writer. */
type QueuedMutation = {
  request: MutationRequest;
  visibility: Visibility;
  resolve(outcome: ExecutedMutation): void;
  reject(error: unknown): void;
  /** Runs of it discarded so far because a commit overlapped them (`#conclude`). */
  conflicts: number;
  /**
   * Its current run, counted from 1 (`#mutationNow`): a promise chain left by
   * an earlier one (cut short, or conflicted) finds it changed and drops itself.
   */
  attempt: number;
  answered: boolean;
  /**
   * Set just before its run commits: `db.commitCount` then, and its outcome
   * once committed at `ts` (`#afterHostCut`).
   */
  committing: {
    before: number;
    outcome: (ts: bigint) => MutationOutcome;
  } | null;
  /** The realm's run of its current attempt, once started (`#mutationNow`). */
  started: RunHandle | null;
};

/** A mutation being run: what finishing it takes, however it ends. */
type MutationRun = {
  item: QueuedMutation;
  /** `item.attempt` when this run started. */
  attempt: number;
  tx: Transaction;
  context: RequestContext;
  job: MutationJob | undefined;
  fn: RegisteredFunction | null;
  /** What it invokes, once its arguments are checked (a moved run invokes it again). */
  call: UdfCall | null;
  /** Where it left the writer slot (`#conclude`); null while it holds the slot. */
  mark: CommitMark | null;
};

/** One task at a time, in arrival order. */
class SerialExecutor {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

export class FunctionRunner {
  readonly #db: Database;
  /** Mutations and every other commit, one at a time. */
  readonly #writer = new SerialExecutor();
  /** Mutations waiting for a writer slot (`#drainMutations`). */
  readonly #pending: QueuedMutation[] = [];
  #drainScheduled = false;
  /** The mutation whose first window runs now, for a shared window cut short. */
  #running: MutationRun | null = null;
  readonly #commits: CommitLog;
  /** Closed until the first build is installed: calls that arrive earlier wait. */
  readonly #gate = new StartupGate();
  readonly #onRun: (event: FunctionRunEvent) => void;
  readonly #sharedWindowMs: number;
  #isolate: Isolate | null = null;
  readonly #validators = new WeakMap<
    RegisteredFunction,
    { args: string; returns: string }
  >();

  constructor(
    db: Database,
    options: {
      onRun?: (event: FunctionRunEvent) => void;
      /** A shared window's watchdog (SHARED_WINDOW_MS); tests shorten it to cut host code. */
      sharedWindowMs?: number;
    } = {},
  ) {
    this.#db = db;
    this.#commits = new CommitLog(db);
    this.#onRun = options.onRun ?? (() => undefined);
    this.#sharedWindowMs = options.sharedWindowMs ?? SHARED_WINDOW_MS;
  }

  /**
   * Serves `isolate` from the next function on; the first one opens the
   * start-up gate. The replaced build's isolate workers go once idle.
   */
  setIsolate(isolate: Isolate): void {
    if (this.#isolate !== isolate) this.#isolate?.offThread.retire();
    this.#isolate = isolate;
    this.#gate.open();
  }

  /**
   * Switches to a new build between two mutations (a writer slot that the
   * start-up gate does not hold back, since the first install is what opens it).
   * `onSwitch` runs in the slot, before the build is served. Queries still
   * running on the old build are run again on the new one.
   */
  install(isolate: Isolate, onSwitch: () => void): Promise<void> {
    return this.#writer.run(() => {
      onSwitch();
      this.setIsolate(isolate);
      this.#commits.reset();
      return Promise.resolve();
    });
  }

  /** Fails the calls still waiting for a first build (the backend is stopping). */
  close(): void {
    this.#gate.close("The local backend stopped before its functions loaded");
    this.#commits.close();
    this.#isolate?.offThread.retire();
  }

  /** Runs `task` once the first build is installed (at once after that). */
  #afterStartup<T>(task: () => Promise<T>): Promise<T> {
    return this.#gate.isOpen ? task() : this.#gate.wait().then(task);
  }

  /** Calls from inside functions (`ctx.runQuery` and friends), for the syscall layer. */
  readonly nested: NestedCalls = {
    runInTransaction: (parent, udfType, address, args) =>
      this.#runNested(parent, udfType, this.#resolve(parent, address), args),
    runFromAction: (parent, udfType, address, args) =>
      this.#runFromAction(
        parent,
        udfType,
        this.#resolve(parent, address),
        args,
      ),
    createFunctionHandle: (parent, address) => {
      const target = this.#resolve(parent, address);
      // The handle must name a function that exists (convex-backend looks it
      // up in `_function_handles`, which holds one row per function).
      this.#findFunction(target.udfPath, target.componentPath);
      return this.#components().functionHandle(target);
    },
  };

  /**
   * Runs a query concurrently with everything else (see the header). Its
   * outcome is valid at its `ts`, the latest commit when it was validated;
   * `onValid` runs synchronously at that moment, before any later commit, so a
   * subscription can file the read set with nothing slipping in between.
   * Without `onValid` it resolves once every commit the outcome may reflect is
   * durable; with it (subscriptions) at validation, and the caller holds the
   * result back itself (SyncSession queues each Transition until its ts is
   * durable).
   */
  async runQuery(
    request: QueryRequest,
    visibility: Visibility = "public",
    onValid?: (outcome: QueryOutcome) => void,
  ): Promise<QueryOutcome> {
    const outcome = await this.#afterStartup(() =>
      this.#query(request, visibility, onValid),
    );
    if (onValid === undefined) await this.#db.durable(outcome.ts);
    return outcome;
  }

  /**
   * Runs `task` alone on the writer executor: no commit can happen until it
   * settles (queries keep running). File storage commits its documents here.
   */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    return this.#afterStartup(() => this.#writer.run(task));
  }

  /** Runs a mutation; resolves once its commit (and all it read) is durable. */
  async runMutation(
    request: MutationRequest,
    visibility: Visibility = "public",
  ): Promise<MutationOutcome> {
    const { observedTs, ...outcome } = await this.executeMutation(
      request,
      visibility,
    );
    await this.#db.durable(observedTs);
    return outcome;
  }

  executeMutation(
    request: MutationRequest,
    visibility: Visibility = "public",
  ): Promise<ExecutedMutation> {
    return this.#afterStartup(
      () =>
        new Promise<ExecutedMutation>((resolve, reject) => {
          const item: QueuedMutation = {
            request,
            visibility,
            // Answered first, marked after: a cut in between (`#afterCut`)
            // answers it again, which a settled promise ignores.
            resolve: (outcome) => {
              resolve(outcome);
              item.answered = true;
            },
            reject: (error) => {
              reject(error instanceof Error ? error : new Error(String(error)));
              item.answered = true;
            },
            conflicts: 0,
            attempt: 0,
            answered: false,
            committing: null,
            started: null,
          };
          this.#enqueue(item);
        }),
    );
  }

  /** Queues a mutation for the next writer slot (`#drainMutations`). */
  #enqueue(item: QueuedMutation): void {
    this.#pending.push(item);
    if (this.#drainScheduled) return;
    this.#drainScheduled = true;
    // After the event loop's poll phase, so that every mutation whose frame
    // arrived in this turn is in the slot.
    setImmediate(() => void this.#writer.run(() => this.#drainMutations()));
  }

  /**
   * One writer slot for the mutations waiting when it starts, run one after
   * another in shared windows (deadline.ts `TimedRealm.shared`): a burst of
   * short mutations from many clients pays for one watchdog per window of
   * MUTATION_WINDOW_MS rather than one each, and the event loop turns between
   * windows (at most every MUTATION_WINDOW_MS, so commits in between still
   * share an fsync). A mutation that does not end inside its first window (it
   * awaits Web Crypto, or computes long enough to be moved off the main
   * thread) leaves the slot and goes on optimistically (`#conclude`), so the
   * next ones start at once. Mutations that arrive meanwhile get the next slot,
   * behind any other writer task queued since.
   */
  async #drainMutations(): Promise<void> {
    this.#drainScheduled = false;
    const batch = this.#pending.splice(0);
    let next = 0;
    let turned = performance.now();
    try {
      while (next < batch.length) {
        // Set inside the window's body (a closure, so held in an object).
        const window: { carried: Promise<void> | null } = { carried: null };
        const store = requestStorage.getStore();
        const first = next;
        // Commits in the window announce themselves after it (database.ts
        // `holdAnnouncements`), so the listeners never run under its watchdog.
        this.#db.holdAnnouncements = true;
        let cut: Error | null;
        try {
          cut = this.#isolate!.udf.shared(this.#sharedWindowMs, () => {
            const opened = performance.now();
            do {
              window.carried = this.#mutationNow(batch[next++]);
            } while (
              window.carried === null &&
              next < batch.length &&
              !this.#db.backlogFull &&
              performance.now() - opened < MUTATION_WINDOW_MS
            );
          });
          // A commit the cut fell in is finished or undone before anything
          // looks at what it left.
          if (cut !== null) this.#db.recoverCut();
          if (cut !== null && next === first) {
            // Cut before the window started any mutation.
            requestStorage.enterWith(store as RequestContext);
          } else if (cut !== null) {
            window.carried = this.#afterCut(batch[next - 1], cut, store);
          }
        } finally {
          this.#db.releaseAnnouncements();
        }
        if (window.carried !== null) await window.carried;
        // A full backlog holds the writer until the disk catches up.
        if (this.#db.backlogFull) await this.#db.durable(this.#db.lastTs);
        if (
          next < batch.length &&
          performance.now() - turned >= MUTATION_WINDOW_MS
        ) {
          await new Promise(setImmediate);
          turned = performance.now();
        }
      }
    } catch (error) {
      for (const item of batch.slice(next)) item.reject(error);
    }
  }

  /**
   * The shared window's watchdog fired in `item`'s run: it failed with the
   * timeout or was moved (then it runs again, off the main thread), and the
   * frames that would have finished it were unwound, the request store's
   * restore among them. What the slot must still wait for, or null.
   */
  #afterCut(
    item: QueuedMutation,
    error: Error,
    store: RequestContext | undefined,
  ): Promise<void> | null {
    requestStorage.enterWith(store as RequestContext);
    const run = this.#running;
    this.#running = null;
    if (error instanceof HostCodeCut && run !== null) {
      // Cut before its function started (checking very large arguments can
      // outlast a window), or in the host code after its first window:
      // nothing was committed, so it runs again, outside any shared window
      // (and a run of it still going is stopped first, `#mutationNow`).
      run.tx.close();
      return this.#mutationNow(item);
    }
    if (run === null) return this.#afterHostCut(item);
    return this.#conclude(run, { error });
  }

  /**
   * The watchdog fired in host code between runs: only a long pause gets here
   * (GC, or a machine so loaded that the process was off the CPU for longer
   * than COMMIT_MARGIN_MS), since only small commits run in a window. `item`
   * is the last mutation the window started, and where its cut left it
   * decides: answered already, nothing to do; committed, answered from what
   * its commit recorded; otherwise nothing of it committed, so it runs again
   * (a promise chain its cut attempt left drops itself, `#current`). A commit
   * cut in the middle was finished or undone first (`Database.recoverCut`).
   */
  #afterHostCut(item: QueuedMutation): Promise<void> | null {
    if (item.answered) return null;
    const committing = item.committing;
    if (committing !== null && this.#db.commitCount === committing.before + 1) {
      item.resolve(this.#executed(committing.outcome(this.#db.lastCommitTs)));
      return null;
    }
    return this.#mutationNow(item);
  }

  /** What `executeMutation` resolves to; a read-only mutation observed the latest commit. */
  #executed(outcome: MutationOutcome): ExecutedMutation {
    return { ...outcome, observedTs: outcome.ts ?? this.#db.lastTs };
  }

  async runAction(
    request: {
      path: string;
      args: JSONValue;
      componentPath?: string;
      scheduledJobId?: string;
      identity?: Identity;
    },
    visibility: Visibility = "public",
  ): Promise<FunctionOutcome> {
    await this.#afterStartup(() => Promise.resolve());
    const componentPath = request.componentPath ?? ROOT_COMPONENT;
    const context = newRequest(
      "action",
      request.path,
      null,
      null,
      componentPath,
    );
    context.scheduledJobId = request.scheduledJobId ?? null;
    context.identity = request.identity ?? ANONYMOUS;
    try {
      const { fn, path, args } = this.#prepare(
        request.path,
        request.args,
        "action",
        visibility,
        componentPath,
        context.identity,
      );
      context.path = path;
      const invoke = () =>
        fn.invokeAction!(context.requestId, JSON.stringify([args]));
      const result = await requestStorage.run(context, () =>
        fn.runsOwnTimeout === true
          ? invoke()
          : withWallClockLimit(ACTION_TIMEOUT_MS, invoke),
      );
      return this.#report(context, this.#finish(context, fn, result));
    } catch (error) {
      return this.#report(context, this.#failure(context, error), error);
    }
  }

  /**
   * Serves an HTTP action from the router that `convex/http.ts` exports
   * (convex 1.48 `HttpRouter.lookup`), as the site origin does on Convex.
   */
  async runHttpAction(
    request: Request,
    identity: Identity = ANONYMOUS,
  ): Promise<Response> {
    await this.#afterStartup(() => Promise.resolve());
    const router = this.#isolate?.modules.http?.default as
      HttpRouterLike | undefined;
    if (router?.isRouter !== true) {
      return new Response(
        "No HTTP actions are defined: convex/http.ts does not export a router",
        { status: 404 },
      );
    }
    const { pathname } = new URL(request.url);
    const match = router.lookup(pathname, request.method);
    if (match === null) {
      return new Response("No matching routes found", { status: 404 });
    }
    const [endpoint, , routePath] = match;
    const context = newRequest(
      "action",
      `${request.method} ${routePath}`,
      null,
    );
    context.identity = identity;
    try {
      const response = await requestStorage.run(context, () =>
        withWallClockLimit(ACTION_TIMEOUT_MS, () =>
          endpoint.invokeHttpAction(request),
        ),
      );
      this.#report(context, {
        status: "success",
        value: null,
        logLines: context.logLines,
      });
      return response;
    } catch (error) {
      const failure = this.#report(
        context,
        this.#failure(context, error),
        error,
      );
      return Response.json(
        httpActionErrorBody(context.requestId, failure.error),
        { status: 500 },
      );
    }
  }

  async #query(
    request: QueryRequest,
    visibility: Visibility,
    onValid: ((outcome: QueryOutcome) => void) | undefined,
  ): Promise<QueryOutcome> {
    for (let run = 0; run < MAX_OPTIMISTIC_RUNS; run++) {
      const mark = this.#commits.begin();
      const started = performance.now();
      try {
        const attempt = await this.#queryAttempt(request, visibility, true);
        const { readSet, readTimestamp } = attempt.tx;
        // Synchronous from here to `onValid`: no commit can come between.
        if (!this.#commits.conflicts(readSet, mark, readTimestamp))
          return this.#acceptQuery(request, attempt, onValid);
        // A long run that conflicted would most likely conflict again.
        const last =
          run === MAX_OPTIMISTIC_RUNS - 1 ||
          performance.now() - started >= LONG_CONFLICTED_RUN_MS;
        if (!last) continue;
        if (onValid !== undefined)
          // A subscription's caller needs a result valid now, which commits
          // keep preventing: it goes on at a snapshot itself (it needs all
          // of its socket's queries at one, `pinSnapshot`).
          return this.#unfiled(request, attempt);
        break;
      } finally {
        this.#commits.end(mark);
      }
    }
    // Commits keep overlapping this query: it runs at a snapshot, where they
    // cannot (one-shot callers take its outcome at the snapshot's ts).
    const pinned = this.pinSnapshot();
    if (pinned !== null) {
      try {
        const outcome = await pinned.run(request, visibility);
        if (outcome !== null) return outcome;
      } finally {
        pinned.release();
      }
    }
    return this.#writer.run(async () =>
      this.#acceptQuery(
        request,
        await this.#queryAttempt(request, visibility, false),
        onValid,
      ),
    );
  }

  /**
   * Pins the committed state as of now, to run queries at it however many
   * commits land meanwhile (storage/database.ts `ReadSnapshot`), as Convex
   * runs every query at one snapshot timestamp: what a socket needs when
   * commits keep invalidating its queries faster than they run. Null when no
   * snapshot can be pinned now. Release it once its runs are done.
   * - `run`: the query's outcome at the snapshot (ts: the snapshot's), or
   *   null when it read what snapshots do not cover (a search index) while
   *   commits landed, so it has no consistent outcome;
   * - `watch`: a watch of outcomes (their read sets) for the commits
   *   after the snapshot: those a commit wrote into are not the latest
   *   ones (checked synchronously before using the others as current).
   */
  pinSnapshot(): PinnedSnapshot | null {
    const snapshot = this.#db.snapshot();
    if (snapshot === null) return null;
    const mark = this.#commits.begin();
    let released = false;
    return {
      ts: snapshot.ts,
      get expired() {
        return snapshot.expired;
      },
      run: async (request, visibility = "public") => {
        const attempt = await this.#afterStartup(() =>
          this.#queryAttempt(request, visibility, true, snapshot),
        );
        if (attempt.tx.readLatest && !snapshot.current) return null;
        return {
          ...this.#acceptQuery(request, attempt, undefined, snapshot.ts),
          readTimestamp: attempt.tx.readTimestamp,
        };
      },
      watch: <T>(from?: CommitWatch<T>) => {
        if (from === undefined) return new CommitWatch<T>(this.#commits, mark);
        from.moveTo(mark);
        return from;
      },
      release: () => {
        if (released) return;
        released = true;
        snapshot.release();
        this.#commits.end(mark);
      },
    };
  }

  /** A conflicted run's outcome, returned without `onValid` (not valid now): its logs stay unreported. */
  #unfiled(request: QueryRequest, attempt: QueryAttempt): QueryOutcome {
    return {
      ...attempt.outcome,
      journal: request.journal ?? null,
      readSet: attempt.tx.readSet,
      ts: this.#db.lastTs,
    };
  }

  /** One run of a query; nothing is reported until it is known to be valid. */
  async #queryAttempt(
    request: QueryRequest,
    visibility: Visibility,
    optimistic: boolean,
    at?: ReadSnapshot,
  ): Promise<QueryAttempt> {
    let tx = new Transaction(this.#db, { readOnly: true, optimistic, at });
    const componentPath = request.componentPath ?? ROOT_COMPONENT;
    let context = newRequest(
      "query",
      request.path,
      tx,
      request.journal ?? null,
      componentPath,
    );
    context.identity = request.identity ?? ANONYMOUS;
    context.pace = request.pace ?? null;
    try {
      const { fn, path, args, target } = this.#prepare(
        request.path,
        request.args,
        "query",
        visibility,
        componentPath,
        context.identity,
      );
      context.path = path;
      const call: UdfCall = {
        kind: "query",
        ...target,
        argsJson: JSON.stringify([args]),
      };
      const restart = (moved: RequestContext) => {
        // Validated against the same commits as the first attempt (`#query`'s mark).
        tx.close();
        tx = new Transaction(this.#db, { readOnly: true, optimistic, at });
        context = restarted(moved, tx);
        return context;
      };
      const offThread = this.#isolate!.offThread;
      const result =
        request.offMainThread === true && offThread.readyNow()
          ? await offThread
              .run(context, call, USER_TIMEOUT_MS)
              .catch(closeOnTimeout(context))
          : await this.#runTopLevel(context, call, restart);
      const pace = context.pace;
      if (pace !== null && result.length >= LARGE_RESULT_CHARS)
        await new Promise<void>((resume) => pace(resume));
      return { tx, context, outcome: this.#finish(context, fn, result) };
    } catch (error) {
      return {
        tx,
        context,
        outcome: this.#failure(context, error),
        thrown: error,
      };
    } finally {
      tx.close();
    }
  }

  #acceptQuery(
    request: QueryRequest,
    { tx, context, outcome, thrown }: QueryAttempt,
    onValid: ((outcome: QueryOutcome) => void) | undefined,
    ts = this.#db.lastTs,
  ): QueryOutcome {
    this.#report(context, outcome, thrown);
    // A failed run keeps the journal it was given, so a retry pages the same way.
    const journal =
      context.journal.produced !== null
        ? JSON.stringify({ end: context.journal.produced })
        : outcome.status === "error"
          ? (request.journal ?? null)
          : null;
    const accepted: QueryOutcome = {
      ...outcome,
      journal,
      readSet: tx.readSet,
      ts,
    };
    onValid?.(accepted);
    return accepted;
  }

  /**
   * Starts `item`'s mutation in the writer slot and answers it when it ends:
   * null when it ended inside its first window (`#drainMutations` then goes
   * on to the next in the same shared window), else what the slot must still
   * wait for (`#conclude`).
   */
  #mutationNow(item: QueuedMutation): Promise<void> | null {
    const attempt = ++item.attempt;
    item.committing = null;
    // An earlier attempt's run that a shared window's cut left going (its
    // outcome lost with the frames that would have taken it) is stopped
    // first: nobody waits for it, and it may hold its context for good.
    if (item.started !== null) this.#isolate!.udf.stop(item.started);
    const { request, visibility } = item;
    const replay = this.#replay(request);
    if (replay !== null) {
      item.resolve(this.#executed(replay));
      return null;
    }
    const tx = new Transaction(this.#db, { readOnly: false });
    const componentPath = request.componentPath ?? ROOT_COMPONENT;
    const context = newRequest(
      "mutation",
      request.path,
      tx,
      null,
      componentPath,
    );
    context.identity = request.identity ?? ANONYMOUS;
    const job = request.job;
    if (job !== undefined) {
      context.scheduledJobId = job.id ?? null;
      if (!job.begin(tx)) {
        tx.close();
        item.resolve(
          this.#executed({
            status: "success",
            value: null,
            logLines: [],
            ts: null,
          }),
        );
        return null;
      }
    }
    const run: MutationRun = {
      item,
      attempt,
      tx,
      context,
      job,
      fn: null,
      call: null,
      mark: null,
    };
    let result: Settled | Promise<string>;
    this.#running = run;
    try {
      const { fn, path, args, target } = this.#prepare(
        request.path,
        request.args,
        "mutation",
        visibility,
        componentPath,
        context.identity,
      );
      context.path = path;
      run.fn = fn;
      run.call = {
        kind: "mutation",
        ...target,
        argsJson: JSON.stringify([args]),
      };
      const started: RunHandle = { run: null };
      item.started = started;
      result = this.#invokeTimedNow(context, run.call, started);
    } catch (error) {
      result = { error: error as Error };
    }
    this.#running = null;
    if (result instanceof Promise) return this.#conclude(run, settle(result));
    // Host work in a shared window must end well before its watchdog can
    // fire: a large commit waits for the window to close.
    if (
      !("error" in result && result.error instanceof MovedError) &&
      !this.#commitsInline(run.tx)
    ) {
      const settled = result;
      return Promise.resolve().then(async () => {
        if (this.#current(run)) await this.#conclude(run, settled);
      });
    }
    return this.#conclude(run, result);
  }

  /**
   * Finishes a mutation's run however it ends, and answers its caller; what
   * the writer slot must still wait for, or null.
   *
   * A run that will not end in its slot (it awaits something, or deadline.ts
   * moved it off the main thread) leaves the slot: its transaction is
   * released and marked in the commit log (commitLog.ts), the slot goes on
   * with the next mutation, and the run, when it ends, is validated and
   * committed in a slot of its own (`#commitDetached`). If a commit made
   * meanwhile wrote into what it read, it runs again from the start, as
   * Convex retries a mutation on an OCC conflict; after MAX_OPTIMISTIC_RUNS
   * conflicts it runs holding the slot, where no commit can land, so a
   * mutation always ends. Commits stay serializable (each is validated
   * against every commit since its reads), and a client's mutations still run
   * in order (a sync session sends the next only once this one committed).
   */
  #conclude(
    run: MutationRun,
    result: Settled | Promise<Settled>,
  ): Promise<void> | null {
    if (result instanceof Promise) {
      // The chain first, then the mark it ends (it reads `run.mark` when the
      // run settles): a shared window's cut between the two (at `release`)
      // would leave a mark nothing ends, and the commit log would keep the
      // changes of every later commit, up to its cap, for good.
      const ended = result
        .then(async (settled) => {
          if (this.#current(run)) await this.#conclude(run, settled);
        })
        .catch((error: unknown) => {
          if (run.mark !== null) this.#commits.end(run.mark);
          run.mark = null;
          run.item.reject(error);
        });
      if (run.mark === null && run.item.conflicts < MAX_OPTIMISTIC_RUNS) {
        run.mark = this.#commits.begin();
        run.tx.release();
        return null;
      }
      return run.mark === null ? ended : null;
    }
    if ("error" in result && result.error instanceof MovedError)
      return this.#conclude(run, this.#moved(run, result.error));
    if (run.mark !== null) return this.#commitDetached(run, result);
    run.item.resolve(this.#executed(this.#endMutation(run, result)));
    return null;
  }

  /**
   * Whether `run` is still its item's run; a stale one (its attempt was cut
   * short and run again, `#afterCut`) is dropped: nothing of it commits.
   */
  #current(run: MutationRun): boolean {
    if (run.attempt === run.item.attempt) return true;
    run.tx.close();
    if (run.mark !== null) this.#commits.end(run.mark);
    run.mark = null;
    return false;
  }

  /**
   * A run moved off the main thread, again from the start (`#rerun`) in a
   * fresh transaction where its job begins as it did. A released run keeps
   * its mark: a commit since then that wrote into what the new attempt reads
   * (its job canceled, say) conflicts it.
   */
  #moved(run: MutationRun, moved: MovedError): Promise<Settled> {
    const restart = (first: RequestContext): RequestContext => {
      run.tx.close();
      run.tx = new Transaction(this.#db, { readOnly: false });
      if (run.mark !== null) run.tx.release();
      run.job?.begin(run.tx);
      run.context = restarted(first, run.tx);
      return run.context;
    };
    return settle(
      Promise.resolve().then(() =>
        this.#rerun(run.context, run.call!, moved, restart),
      ),
    );
  }

  /**
   * A released run ended: in a writer slot, it commits if no commit since its
   * mark wrote into what it read, and runs again otherwise. A copy of the
   * request that committed meanwhile (a client resent it after reconnecting)
   * wins, and this run's writes are dropped (exactly once). A timeout is
   * final: the run has used its second.
   */
  #commitDetached(run: MutationRun, result: Settled): Promise<void> {
    const mark = run.mark!;
    return this.#writer.run(() => {
      if (!this.#current(run)) return Promise.resolve();
      try {
        const replay = this.#replay(run.item.request);
        if (replay !== null) {
          run.tx.close();
          run.item.resolve(this.#executed(replay));
        } else if (
          !("error" in result && result.error instanceof UserTimeoutError) &&
          this.#commits.conflicts(run.tx.readSet, mark, run.tx.readTimestamp)
        ) {
          run.tx.close();
          run.item.conflicts++;
          this.#enqueue(run.item);
        } else {
          run.item.resolve(this.#executed(this.#endMutation(run, result)));
        }
      } finally {
        this.#commits.end(mark);
        run.mark = null;
      }
      return Promise.resolve();
    });
  }

  /** Whether a mutation that ended in its window may commit there (INLINE_COMMIT_MAX_DOCUMENTS). */
  #commitsInline(tx: Transaction): boolean {
    const left = this.#isolate!.udf.sharedTimeLeft();
    if (left === Infinity) return true;
    return (
      left >= COMMIT_MARGIN_MS &&
      tx.usage.documentsWritten <= INLINE_COMMIT_MAX_DOCUMENTS &&
      tx.usage.bytesWritten <= INLINE_COMMIT_MAX_BYTES
    );
  }

  /** A retried mutation that already committed: its stored outcome (exactly once). */
  #replay(request: MutationRequest): MutationOutcome | null {
    if (request.dedupe === undefined) return null;
    const stored = this.#db.findSessionRequest(
      request.dedupe.sessionId,
      request.dedupe.requestId,
    );
    if (stored === null) return null;
    const replay = JSON.parse(stored.outcome) as FunctionSuccess;
    return {
      ...replay,
      value: resolveCommitTsJson(replay.value, stored.ts),
      ts: stored.ts,
    };
  }

  /** Reports a mutation's run and commits what it wrote, or records its failure. */
  #endMutation(run: MutationRun, result: Settled): MutationOutcome {
    const { tx, context, job } = run;
    const { request } = run.item;
    try {
      if ("error" in result) throw result.error;
      const outcome = this.#report(
        context,
        this.#finish(context, run.fn!, result.value),
      );
      if (outcome.status === "error")
        return this.#failJob(run.item, job, outcome);
      job?.succeed(tx);
      if (tx.pendingWrites().size === 0) {
        // Nothing to make durable: no timestamp, no fsync, no de-duplication
        // record. A retry re-runs it, which has no effect either (Convex's
        // committer skips read-only transactions the same way).
        return { ...outcome, ts: this.#db.lastTs };
      }
      // The de-duplication record commits with the writes, so a retry after a
      // crash or a dropped socket can never run the mutation a second time.
      const record =
        request.dedupe === undefined
          ? undefined
          : { ...request.dedupe, outcome: JSON.stringify(outcome) };
      const committed = (ts: bigint): MutationOutcome => ({
        ...outcome,
        value: resolveCommitTsJson(outcome.value, ts),
        ts,
      });
      run.item.committing = {
        before: this.#db.commitCount,
        outcome: committed,
      };
      return committed(this.#db.commit(tx.pendingWrites(), record).ts);
    } catch (error) {
      return this.#failJob(
        run.item,
        job,
        this.#report(context, this.#failure(context, error), error),
      );
    } finally {
      tx.close();
    }
  }

  /** A failed mutation commits nothing; a scheduled one records the failure alone. */
  #failJob(
    item: QueuedMutation,
    job: MutationJob | undefined,
    outcome: FunctionFailure,
  ): MutationOutcome {
    if (job === undefined) return { ...outcome, ts: null };
    const tx = new Transaction(this.#db, { readOnly: false });
    try {
      job.fail(tx, outcome.error.trace);
      item.committing = {
        before: this.#db.commitCount,
        outcome: (ts) => ({ ...outcome, ts }),
      };
      return { ...outcome, ts: this.#db.commit(tx.pendingWrites()).ts };
    } finally {
      tx.close();
    }
  }

  /**
   * Runs `task` in a transaction of its own between two functions and commits
   * what it wrote: the scheduler's and crons' bookkeeping.
   */
  async runSystem<T>(task: (tx: Transaction) => T): Promise<T> {
    const { result, ts } = await this.#writer.run(() => {
      const tx = new Transaction(this.#db, { readOnly: false });
      try {
        const result = task(tx);
        const ts =
          tx.pendingWrites().size > 0
            ? this.#db.commit(tx.pendingWrites()).ts
            : this.#db.lastTs;
        return Promise.resolve({ result, ts });
      } finally {
        tx.close();
      }
    });
    // A job marked as started must be on disk before its action runs, or a
    // crash would run it a second time.
    await this.#db.durable(ts);
    return result;
  }

  /** What kind of function `udfPath` names in a component of the current build, or null if none. */
  functionKind(
    udfPath: string,
    componentPath: string = ROOT_COMPONENT,
  ): UdfType | null {
    const { module, exportName } = canonicalizeUdfPath(udfPath);
    const fn = this.#isolate?.components.get(componentPath)?.modules[module]?.[
      exportName
    ] as RegisteredFunction | undefined;
    if (fn === undefined || fn === null) return null;
    return fn.isQuery
      ? "query"
      : fn.isMutation
        ? "mutation"
        : fn.isAction
          ? "action"
          : null;
  }

  /** Whether a component of the current build has `module` (a canonical path without ".js"). */
  hasModule(module: string, componentPath: string = ROOT_COMPONENT): boolean {
    return (
      this.#isolate?.components.get(componentPath)?.modules[module] !==
      undefined
    );
  }

  /** Every component of the current build, the app's own ("") first. */
  componentPaths(): string[] {
    return this.#isolate === null
      ? [ROOT_COMPONENT]
      : [...this.#isolate.components.instances()].map((c) => c.path);
  }

  /** The function a `ctx.scheduler` address names, from where `parent` runs. */
  resolveAddress(
    parent: RequestContext,
    address: FunctionAddress,
  ): ComponentFunctionPath {
    return this.#resolve(parent, address);
  }

  #runNested(
    parent: RequestContext,
    udfType: "query" | "mutation" | "snapshotQuery",
    target: ComponentFunctionPath,
    argsJson: JSONValue,
  ): Promise<JSONValue> | InWindow {
    const kind = udfType === "mutation" ? "mutation" : "query";
    if (kind === "mutation" && parent.udfType === "query") {
      throw new Error(
        "Queries cannot call ctx.runMutation: only mutations and actions can",
      );
    }
    const tx = parent.tx!;
    const {
      fn,
      path: canonical,
      args,
      target: callee,
    } = this.#prepare(
      target.udfPath,
      argsJson,
      kind,
      "any",
      target.componentPath,
      parent.identity,
    );
    // The child writes to a layer of its own: folded into the caller's on
    // success, dropped on failure, whatever else the caller does meanwhile.
    const layer = tx.child(parent.layer!, udfType);
    const child: RequestContext = {
      ...parent,
      udfType: kind,
      path: canonical,
      componentPath: target.componentPath,
      layer,
      // A journal of its own: convex-backend runs a nested call with
      // `QueryJournal::new()` (crates/isolate `async_syscall.rs` `run_udf`).
      journal: { endCursor: null, produced: null, paginated: false },
      streams: new Map(),
      nextStreamId: 0,
    };
    const call: UdfCall = {
      kind,
      ...callee,
      argsJson: JSON.stringify([args]),
    };
    const invoke = (modules: ComponentTree) => invokeUdf(modules, call);
    const fail = (error: unknown): never => {
      if (error instanceof UserTimeoutError) tx.close();
      throw asSyscallError(error);
    };
    /** The callee's result as the caller's syscall result (JSON). */
    const end = (result: string): string => {
      try {
        const outcome = this.#finish(child, fn, result);
        if (outcome.status === "error") throw new Error(outcome.error.trace);
        tx.merge(layer);
        return JSON.stringify(outcome.value ?? null);
      } catch (error) {
        return fail(error);
      }
    };
    // In the caller's window, the callee's result comes back in the same
    // drain, so a mutation that calls a component can end in one window.
    const inWindow = requestStorage.run(child, () =>
      this.#isolate!.udf.nestedNow(invoke, end, fail),
    );
    if (inWindow !== null) return { inWindow };
    return this.#invokeTimed(child, call).then(
      (result) => JSON.parse(end(result)) as JSONValue,
      fail,
    );
  }

  async #runFromAction(
    parent: RequestContext,
    udfType: UdfType,
    target: ComponentFunctionPath,
    args: JSONValue,
  ): Promise<JSONValue> {
    const request = {
      path: target.udfPath,
      componentPath: target.componentPath,
      args,
      identity: parent.identity,
    };
    const outcome =
      udfType === "query"
        ? await this.runQuery(request, "any")
        : udfType === "mutation"
          ? await this.runMutation(request, "any")
          : await this.runAction(request, "any");
    parent.logLines.push(...outcome.logLines);
    if (outcome.status === "success") return outcome.value;
    // The caller sees the callee's trace without its request id
    // (convex-backend `RedactedJsError::nested_to_string`).
    if (outcome.errorData !== undefined)
      throw new SyscallConvexError(outcome.error.trace, outcome.errorData);
    throw new Error(outcome.error.trace);
  }

  #components(): ComponentTree {
    if (this.#isolate === null)
      throw new ExpectedError("The functions are not loaded yet");
    return this.#isolate.components;
  }

  /** The function an address names, from where `parent` runs. */
  #resolve(
    parent: RequestContext,
    address: FunctionAddress,
  ): ComponentFunctionPath {
    try {
      return this.#components().resolveAddress(parent.componentPath, address);
    } catch (error) {
      if (error instanceof ComponentError)
        throw new ExpectedError(error.message);
      throw error;
    }
  }

  /** The registered function at `udfPath` in a component, and its canonical path. */
  #findFunction(
    udfPath: string,
    componentPath: string,
  ): { fn: RegisteredFunction; canonical: string; actual: UdfType } {
    const { module, exportName, canonical } = canonicalizeUdfPath(udfPath);
    const notFound = () => this.#notFound(canonical);
    const exports =
      this.#isolate?.components.get(componentPath)?.modules[module];
    const fn = exports?.[exportName] as RegisteredFunction | undefined;
    if (
      fn === undefined ||
      fn === null ||
      (typeof fn !== "function" && typeof fn !== "object")
    )
      throw notFound();
    const actual = fn.isQuery
      ? "query"
      : fn.isMutation
        ? "mutation"
        : fn.isAction
          ? "action"
          : null;
    if (actual === null) throw notFound();
    return { fn, canonical, actual };
  }

  /**
   * Finds the function and checks its visibility, type and arguments. `target`
   * names it for `invokeUdf`, which finds the same query or mutation in the
   * evaluation it runs in (a timed context, an isolate worker).
   */
  #prepare(
    udfPath: string,
    argsJson: JSONValue,
    kind: UdfType,
    visibility: Visibility,
    componentPath: string,
    identity: Identity,
  ): {
    fn: RegisteredFunction;
    path: string;
    args: JSONValue;
    target: Pick<UdfCall, "componentPath" | "module" | "exportName">;
  } {
    // An admin may call internal functions and into components (convex-backend:
    // internal UDFs are callable with an admin key, as `npx convex run` does).
    if (isAdmin(identity)) visibility = "any";
    if (visibility === "public" && componentPath !== ROOT_COMPONENT) {
      // Only an admin may call into a component from outside (convex-backend
      // `UdfPostRequestWithComponent::component_path` → `must_be_admin`).
      throw new ExpectedError(BAD_DEPLOY_KEY);
    }
    const { fn, canonical, actual } = this.#findFunction(
      udfPath,
      componentPath,
    );
    if (visibility === "public" && fn.isPublic !== true)
      throw this.#notFound(canonical);
    if (actual !== kind) {
      throw new ExpectedError(
        `Trying to execute ${canonical} as ${capitalize(kind)}, but it is defined as ${capitalize(actual)}.`,
      );
    }
    const args = Array.isArray(argsJson) ? argsJson[0] : argsJson;
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      throw new ExpectedError(
        `ArgumentValidationError: Arguments to ${canonical} must be an object, got ${JSON.stringify(args ?? null)}.`,
      );
    }
    let decoded: Value;
    try {
      decoded = jsonToConvex(args);
    } catch (error) {
      throw new ExpectedError(
        `ArgumentValidationError: ${(error as Error).message}`,
      );
    }
    const sizeError = argumentsSizeError(canonical, decoded);
    if (sizeError !== null) throw new ExpectedError(sizeError);
    const argsError = validateArgs(this.#validatorsOf(fn).args, decoded, {
      tableNameOfId: (id) => this.#tableNameOfId(id, componentPath),
    });
    if (argsError !== null) throw new ExpectedError(argsError);
    const { module, exportName } = canonicalizeUdfPath(udfPath);
    return {
      fn,
      path: canonical,
      args,
      target: { componentPath, module, exportName },
    };
  }

  /** `v.id("t")` in a component means its own `t`: another namespace's ID names no table there. */
  #tableNameOfId(id: string, componentPath: string): string | null {
    const table = this.#db.tableOfId(id);
    return table === undefined
      ? null
      : localTableName(componentPath, table.name);
  }

  #notFound(canonical: string): ExpectedError {
    return new ExpectedError(
      `Could not find public function for '${canonical}'. Did you forget to run \`npx convex dev\`?`,
    );
  }

  /** `exportArgs()` / `exportReturns()` re-serialize on every call; a function's validators never change. */
  #validatorsOf(fn: RegisteredFunction): { args: string; returns: string } {
    let validators = this.#validators.get(fn);
    if (validators === undefined) {
      validators = {
        args: fn.exportArgs?.() ?? '{"type":"any"}',
        returns: fn.exportReturns?.() ?? "null",
      };
      this.#validators.set(fn, validators);
    }
    return validators;
  }

  #finish(
    context: RequestContext,
    fn: RegisteredFunction,
    resultJson: string,
  ): FunctionOutcome {
    const value = JSON.parse(resultJson) as JSONValue;
    const returns = this.#validatorsOf(fn).returns;
    // Decoded only for a returns validator: a page of megabytes costs one
    // parse and one walk, and its text is sent as it came (`rememberJson`).
    const returnsError =
      resultSizeError(context.path, value, resultJson) ??
      (hasValidator(returns)
        ? validateReturns(returns, jsonToConvex(value), {
            tableNameOfId: (id) =>
              this.#tableNameOfId(id, context.componentPath),
          })
        : null);
    if (returnsError !== null) return failureOf(context, jsError(returnsError));
    rememberJson(value, resultJson);
    return { status: "success", value, logLines: context.logLines };
  }

  /** An exception from a function, as Convex describes it (errors.ts). */
  #failure(context: RequestContext, error: unknown): FunctionFailure {
    if (
      error instanceof ExpectedError ||
      error instanceof UserTimeoutError ||
      error instanceof SystemError
    )
      return failureOf(context, jsError(error.message));
    const { name, message, stack, convexErrorData } = thrownParts(error);
    const frames =
      stack !== undefined && this.#isolate !== null
        ? this.#isolate.errorFrames(stack)
        : [];
    const data =
      convexErrorData === undefined
        ? undefined
        : (JSON.parse(convexErrorData) as JSONValue);
    return failureOf(context, jsError(uncaught(name, message), frames, data));
  }

  #report<T extends FunctionOutcome>(
    context: RequestContext,
    outcome: T,
    thrown?: unknown,
  ): T {
    const uncaught =
      outcome.status === "error" &&
      thrown !== undefined &&
      !(thrown instanceof ExpectedError);
    if (context.logLines.length > 0 || uncaught) {
      this.#onRun({
        udfType: context.udfType,
        path: componentFunctionName(context.componentPath, context.path),
        logLines: context.logLines,
        ...(uncaught ? { uncaughtError: outcome.error.trace.trimEnd() } : {}),
      });
    }
    return outcome;
  }

  /**
   * Runs a top-level query in a timed context on the main thread, and again
   * from the start off it (`#rerun`) when deadline.ts moves it.
   */
  async #runTopLevel(
    context: RequestContext,
    call: UdfCall,
    restart: (moved: RequestContext) => RequestContext,
  ): Promise<string> {
    try {
      return await this.#invokeTimed(context, call);
    } catch (error) {
      if (!(error instanceof MovedError)) throw error;
      return await this.#rerun(context, call, error, restart);
    }
  }

  /**
   * A run deadline.ts moved (a synchronous stretch past MAIN_SLICE_MS), again
   * from the start in an isolate worker with what is left of its second
   * (Convex's limit is the function's total). `restart` gives the context to
   * run again in, with a fresh transaction: nothing of the attempt before was
   * committed, and its log lines are dropped with it.
   *
   * The watchdog is wall-clock, so on a busy machine a short function can be
   * moved without having computed for long (its user time, the lesser of
   * wall and CPU time, says so). Such a run, and any mutation (which would
   * wait for the boot in the writer slot), runs once more on the main thread,
   * after the event loop turns, when no worker is ready to take it at once
   * (a boot takes several hundred ms); a second move sends it to the worker.
   * A query that did compute for its slice waits for the worker instead: a
   * second slice on the main thread would hold every other client again.
   */
  async #rerun(
    context: RequestContext,
    call: UdfCall,
    moved: MovedError,
    restart: (moved: RequestContext) => RequestContext,
  ): Promise<string> {
    const offThread = this.#isolate!.offThread;
    let usedMs = moved.usedMs;
    let rerun = restart(context);
    // One that allocated past its share goes where its heap is capped, and a
    // query that did compute for its slice would only hold everyone again.
    if (
      !moved.forMemory &&
      (call.kind === "mutation" || moved.usedMs < MAIN_SLICE_MS / 2) &&
      !offThread.readyNow()
    ) {
      // Once more on the main thread, but after the event loop turns: two
      // slices back to back would hold every other client for both.
      await new Promise<void>((resolve) => setImmediate(resolve));
      try {
        return await this.#invokeTimed(rerun, call, USER_TIMEOUT_MS - usedMs);
      } catch (error) {
        if (!(error instanceof MovedError)) throw error;
        usedMs += error.usedMs;
      }
      rerun = restart(rerun);
    }
    return await offThread
      .run(rerun, call, USER_TIMEOUT_MS - usedMs)
      .catch(closeOnTimeout(rerun));
  }

  /**
   * Runs a query or mutation in the timed context with Convex's 1 s; a nested
   * call joins its caller's budget, and runs where its caller runs (an
   * isolate worker, for a run moved there). A timed-out run leaves its
   * transaction closed, so nothing it wrote commits.
   */
  #invokeTimedNow(
    context: RequestContext,
    call: UdfCall,
    handle: RunHandle,
  ): Settled | Promise<string> {
    const realm = this.#isolate!.udf;
    return requestStorage.run(context, () =>
      realm.invokeNow(
        USER_TIMEOUT_MS,
        (modules) => invokeUdf(modules, call),
        handle,
      ),
    );
  }

  #invokeTimed(
    context: RequestContext,
    call: UdfCall,
    limitMs = USER_TIMEOUT_MS,
  ): Promise<string> {
    if (context.offThread !== null)
      return context.offThread.invoke(context, call);
    const realm = this.#isolate!.udf;
    return requestStorage.run(context, () =>
      realm
        .invoke(limitMs, (modules) => invokeUdf(modules, call))
        .catch(closeOnTimeout(context)),
    );
  }
}

/** How a run's promise ends, as a value. */
function settle(run: Promise<string>): Promise<Settled> {
  return run.then(
    (value) => ({ value }),
    (error: unknown) => ({ error: error as Error }),
  );
}

/** A run past its limit leaves its transaction closed, so nothing it wrote commits. */
function closeOnTimeout(context: RequestContext): (error: unknown) => never {
  return (error) => {
    if (error instanceof UserTimeoutError) context.tx?.close();
    throw error;
  };
}

/**
 * The same request from the start, in a fresh transaction (`tx`): what a run
 * moved off the main thread runs again in. It keeps what the request is (id,
 * caller, `Date.now()`, the journal it was given), not what the first attempt
 * did.
 */
function restarted(context: RequestContext, tx: Transaction): RequestContext {
  return {
    ...context,
    tx,
    layer: tx.root,
    logLines: [],
    journal: {
      endCursor: context.journal.endCursor,
      produced: null,
      paginated: false,
    },
    streams: new Map(),
    nextStreamId: 0,
    offThread: null,
  };
}

type HttpRouterLike = {
  isRouter?: boolean;
  lookup(
    path: string,
    method: string,
  ):
    | readonly [
        { invokeHttpAction(request: Request): Promise<Response> },
        string,
        string,
      ]
    | null;
};

/** A query's run before validation: reported only if no commit overlapped it. */
type QueryAttempt = {
  tx: Transaction;
  context: RequestContext;
  outcome: FunctionOutcome;
  /** What the function threw, when it failed that way. */
  thrown?: unknown;
};

/** A failure we describe ourselves (no stack): bad arguments, unknown function, timeout. */
class ExpectedError extends Error {}

function newRequest(
  udfType: UdfType,
  path: string,
  tx: Transaction | null,
  journal: string | null = null,
  componentPath: string = ROOT_COMPONENT,
): RequestContext {
  return {
    udfType,
    path,
    componentPath,
    requestId: `${REQUEST_ID_PREFIX}${(requestCounter++).toString(16).padStart(8, "0")}`,
    scheduledJobId: null,
    identity: ANONYMOUS,
    tx,
    layer: tx?.root ?? null,
    nowMs: Date.now(),
    logLines: [],
    journal: {
      endCursor: parseJournal(journal),
      produced: null,
      paginated: false,
    },
    streams: new Map(),
    nextStreamId: 0,
    offThread: null,
    pace: null,
  };
}

/** Journals are ours to define (the client treats them as opaque); unreadable ones count as empty. */
function parseJournal(journal: string | null): string | null {
  if (journal === null) return null;
  try {
    const parsed = JSON.parse(journal) as { end?: unknown };
    return typeof parsed.end === "string" ? parsed.end : null;
  } catch {
    return null;
  }
}

function failureOf(context: RequestContext, error: JsError): FunctionFailure {
  return {
    status: "error",
    errorMessage: clientErrorMessage(context.requestId, error),
    error,
    ...(error.data === undefined ? {} : { errorData: error.data }),
    logLines: context.logLines,
  };
}

function asSyscallError(error: unknown): Error {
  const e = error as { message?: string; data?: unknown } | null;
  if (
    e !== null &&
    typeof e === "object" &&
    Symbol.for("ConvexError") in e &&
    typeof e.data === "string"
  ) {
    return new SyscallConvexError(
      e.message ?? "",
      JSON.parse(e.data) as JSONValue,
    );
  }
  return error instanceof Error
    ? error
    : new Error(e?.message ?? String(error));
}

/** How logs name a component's function: "presence/batchWorker/lib:ping"; the app's keep "lib:ping". */
export function componentFunctionName(
  componentPath: string,
  udfPath: string,
): string {
  return componentPath === ROOT_COMPONENT
    ? udfPath
    : `${componentPath}/${udfPath}`;
}

function capitalize(text: string): string {
  return text[0].toUpperCase() + text.slice(1);
}

/**
 * Canonical function paths as the real backend's `udf_path.canonicalize()`:
 * "messages:list", "dir/file.js:fn" → "dir/file:fn", "dir/file" → "dir/file:default".
 * Only query paths arrive canonical from the client; mutations and actions
 * arrive as the caller wrote them (convex 1.48 `client.ts`).
 */
export function canonicalizeUdfPath(udfPath: string): {
  module: string;
  exportName: string;
  canonical: string;
} {
  const colon = udfPath.lastIndexOf(":");
  let module = colon === -1 ? udfPath : udfPath.slice(0, colon);
  const exportName = colon === -1 ? "default" : udfPath.slice(colon + 1);
  if (module.endsWith(".js")) module = module.slice(0, -3);
  module = module.replace(/^\/+/, "");
  return { module, exportName, canonical: `${module}:${exportName}` };
}
