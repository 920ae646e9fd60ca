/**
 * `ctx.scheduler` and the executor that runs what it schedules.
 *
 * A job is a `_scheduled_functions` document (convex 1.48 `server/schema.ts`
 * `_systemSchema`): `{name, args: [args], scheduledTime, completedTime?, state}`.
 * Its state machine, as convex-backend `application/src/scheduled_jobs/mod.rs`:
 *
 *   pending ──(mutation commits, with its writes)──────────────▶ success
 *      │    └─(mutation throws; its writes are dropped)──────────▶ failed
 *      ├──(action starts: committed before it runs)──▶ inProgress ──▶ success | failed
 *      └──(cancel)──▶ canceled           inProgress ──(cancel)──▶ canceled
 *
 * So a scheduled mutation runs exactly once (the state change commits in the
 * same transaction as its writes), and an action at most once: an action found
 * `inProgress` at start-up was cut off by a crash and becomes `failed` with
 * Convex's "Transient error while executing action". Scheduling is a write of
 * the scheduling transaction, so a mutation that rolls back schedules nothing.
 *
 * Only the next due job has a timer: jobs are read in `scheduledTime` order
 * from the `by_state_scheduledTime` system index, and the executor re-reads
 * only after a commit that touched `_scheduled_functions` or a job finished,
 * so pending jobs cost nothing per unrelated commit.
 *
 * Usage:
 *   const scheduler = new Scheduler(db, runner);
 *   createSyscalls({ db, nested: runner.nested, extensions: [scheduler.syscalls] });
 *   await scheduler.start();   // after the first build is installed
 */
import {
  convexToJson,
  jsonToConvex,
  type JSONValue,
  type Value,
} from "convex/values";
import type { Database } from "../storage/database.ts";
import type { Doc } from "../values/wire.ts";
import type { FunctionRunner } from "./functionRunner.ts";
import { canonicalizeUdfPath } from "./functionRunner.ts";
import { internalTableName, ROOT_COMPONENT } from "./components.ts";
import type { RequestContext, SyscallExtensions } from "./syscalls.ts";
import type {
  SerializedQuery,
  Transaction,
  WriteLayer,
} from "./transaction.ts";

export const SCHEDULED_FUNCTIONS = "_scheduled_functions";
const BY_STATE_SCHEDULED_TIME = "by_state_scheduledTime";
const BY_COMPLETED_TIME = "by_completedTime";

/** convex-backend knobs `TRANSACTION_MAX_NUM_SCHEDULED` and the argument size limits. */
export const MAX_SCHEDULED_PER_TRANSACTION = 1000;
const MAX_SCHEDULED_ARGS_BYTES = 4 * 1024 * 1024;
const MAX_SCHEDULED_TOTAL_ARGS_BYTES = 16 * 1024 * 1024;
/** `validate_schedule_args`: more than 5 years away is surely a unit mistake. */
const MAX_SCHEDULE_DISTANCE_MS = 5 * 366 * 24 * 3600 * 1000;
/** Jobs running at once (knob `SCHEDULED_JOB_EXECUTION_PARALLELISM`). */
const EXECUTION_PARALLELISM = 10;
/** Finished jobs are kept 7 days (knob `SCHEDULED_JOB_RETENTION`). */
export const COMPLETED_JOB_RETENTION_MS = 7 * 24 * 3600 * 1000;
const GC_BATCH = 1000;
const GC_INTERVAL_MS = 60 * 60 * 1000;
/** setTimeout's largest delay; a longer wait just re-reads the queue on wake-up. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type JobState =
  | { kind: "pending" }
  | { kind: "inProgress" }
  | { kind: "success" }
  | { kind: "failed"; error: string }
  | { kind: "canceled" };

type Job = Doc & {
  name: string;
  /** Present only for a component's job: the component it runs in. */
  componentPath?: string;
  args: Value[];
  scheduledTime: number;
  completedTime?: number;
  state: JobState;
};

/** Time for the job runners (scheduler, crons); tests pass a fake one. */
export type Clock = {
  now(): number;
  /** Calls `fn` after `ms`; returns a function that cancels it. */
  setTimer(fn: () => void, ms: number): () => void;
};

export const SYSTEM_CLOCK: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const timer = setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_MS));
    return () => clearTimeout(timer);
  },
};

/** Arguments of `1.0/schedule` (convex 1.48 `scheduler_impl.ts`): `ts` is in seconds. */
type ScheduleArgs = Record<string, unknown>;

export type JobRunnerLogger = {
  info(line: string): void;
  error(line: string): void;
};

export class Scheduler {
  readonly #db: Database;
  readonly #runner: FunctionRunner;
  readonly #clock: Clock;
  /** What each transaction scheduled so far, for the per-transaction limits. */
  readonly #scheduledBy = new WeakMap<
    Transaction,
    { count: number; bytes: number }
  >();
  readonly #running = new Set<string>();
  readonly #stopListening: () => void;
  #cancelTimer: (() => void) | null = null;
  #scanning: Promise<void> | null = null;
  #scanAgain = false;
  #started = false;
  #closed = false;
  #lastGc = -Infinity;

  constructor(
    db: Database,
    runner: FunctionRunner,
    options: { clock?: Clock } = {},
  ) {
    this.#db = db;
    this.#runner = runner;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#stopListening = db.onCommit((result) => {
      for (const table of result.tables) {
        if (isJobTable(table)) {
          this.#wake();
          return;
        }
      }
    });
  }

  /** Fails the actions a previous process left running, then runs due jobs. */
  async start(): Promise<void> {
    await this.#runner.runSystem((tx) => {
      for (const table of this.#jobTables()) {
        for (const job of readJobs(tx, table, BY_STATE_SCHEDULED_TIME, [
          eq("state.kind", "inProgress"),
        ])) {
          this.#complete(tx, job._id, {
            kind: "failed",
            error: "Transient error while executing action",
          });
        }
      }
    });
    this.#started = true;
    this.#wake();
  }

  /** Stops starting jobs; running ones finish on their own. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stopListening();
    this.#cancelTimer?.();
    await this.#scanning;
  }

  // ---- syscalls --------------------------------------------------------------

  /** The ops `convex/server` makes for `ctx.scheduler` (convex 1.48 `scheduler_impl.ts`). */
  readonly syscalls: SyscallExtensions = {
    async: {
      "1.0/schedule": (request, args) => {
        const { tx, layer } = requireMutation(request, "1.0/schedule");
        return Promise.resolve(
          this.scheduleInTransaction(request, tx, layer, args),
        );
      },
      "1.0/cancel_job": (request, args) => {
        const { tx, layer } = requireMutation(request, "1.0/cancel_job");
        this.cancelInTransaction(tx, layer, args.id);
        return Promise.resolve(null);
      },
      "1.0/actions/schedule": (request, args) => {
        requireAction(request, "1.0/actions/schedule");
        return this.scheduleFromAction(request, args);
      },
      "1.0/actions/cancel_job": async (request, args) => {
        requireAction(request, "1.0/actions/cancel_job");
        await this.cancelFromAction(args.id);
        return null;
      },
    },
  };

  /** `1.0/schedule` inside a mutation: a write of its transaction. */
  scheduleInTransaction(
    request: RequestContext,
    tx: Transaction,
    layer: WriteLayer,
    args: ScheduleArgs,
  ): string {
    const { name, componentPath, fnArgs, scheduledTime } = this.#validate(
      request,
      args,
    );
    // A job lives in its scheduler's namespace, so its ID is one of that
    // component's `_scheduled_functions` (convex-backend `SchedulerModel` is
    // per namespace). Only a job that runs in another component (scheduled by
    // reference) says where; the app's jobs keep exactly Convex's fields.
    const table = internalTableName(request.componentPath, SCHEDULED_FUNCTIONS);
    const where: Record<string, Value> =
      componentPath === request.componentPath ? {} : { componentPath };
    const used = this.#scheduledBy.get(tx) ?? { count: 0, bytes: 0 };
    if (used.count >= MAX_SCHEDULED_PER_TRANSACTION) {
      throw new Error(
        `Too many functions scheduled by this mutation (limit: ${MAX_SCHEDULED_PER_TRANSACTION})`,
      );
    }
    const bytes = JSON.stringify(args.args).length;
    if (bytes > MAX_SCHEDULED_ARGS_BYTES) {
      throw new Error(
        `Arguments for scheduled function ${name} are too large (${bytes} bytes; limit: ${MAX_SCHEDULED_ARGS_BYTES} bytes)`,
      );
    }
    if (used.bytes + bytes > MAX_SCHEDULED_TOTAL_ARGS_BYTES) {
      throw new Error(
        `Too large total size of the arguments of scheduled functions from this mutation (limit: ${MAX_SCHEDULED_TOTAL_ARGS_BYTES} bytes)`,
      );
    }
    this.#scheduledBy.set(tx, {
      count: used.count + 1,
      bytes: used.bytes + bytes,
    });
    // A job scheduled by a canceled job is born canceled (convex-backend
    // `SchedulerModel::schedule`), so canceling a chain stops all of it.
    const parent =
      request.scheduledJobId === null
        ? null
        : (tx.get(
            request.scheduledJobId,
            this.#tableOf(request.scheduledJobId),
            layer,
          ) as Job | null);
    if (parent?.state.kind === "canceled") {
      const now = this.#clock.now();
      return tx.insertSystem(
        table,
        {
          name,
          ...where,
          args: [fnArgs],
          scheduledTime: now,
          completedTime: now,
          state: { kind: "canceled" },
        },
        layer,
      );
    }
    return tx.insertSystem(
      table,
      {
        name,
        ...where,
        args: [fnArgs],
        scheduledTime,
        state: { kind: "pending" },
      },
      layer,
    );
  }

  /** `1.0/actions/schedule`: its own transaction, committed at once. */
  scheduleFromAction(
    request: RequestContext,
    args: ScheduleArgs,
  ): Promise<string> {
    return this.#runner.runSystem((tx) =>
      this.scheduleInTransaction(request, tx, tx.root, args),
    );
  }

  /** `1.0/cancel_job`: pending and running jobs become canceled; finished ones stay. */
  cancelInTransaction(tx: Transaction, layer: WriteLayer, id: unknown): void {
    if (typeof id !== "string" || !isJobTable(this.#tableOf(id))) {
      throw new Error(
        `Invalid argument \`id\` for \`cancel\`: ${JSON.stringify(id)} is not an ID of the "${SCHEDULED_FUNCTIONS}" table`,
      );
    }
    this.#complete(tx, id, { kind: "canceled" }, layer);
  }

  cancelFromAction(id: unknown): Promise<void> {
    return this.#runner.runSystem((tx) =>
      this.cancelInTransaction(tx, tx.root, id),
    );
  }

  #validate(
    request: RequestContext,
    args: ScheduleArgs,
  ): {
    name: string;
    componentPath: string;
    fnArgs: Value;
    scheduledTime: number;
  } {
    const address =
      typeof args.name === "string"
        ? { name: args.name }
        : typeof args.reference === "string"
          ? { reference: args.reference }
          : typeof args.functionHandle === "string"
            ? { functionHandle: args.functionHandle }
            : null;
    if (address === null)
      throw new Error("ctx.scheduler needs a function reference");
    const target = this.#runner.resolveFunction(request, address);
    if (typeof args.ts !== "number" || !Number.isFinite(args.ts)) {
      throw new Error("The scheduled time must be a finite number");
    }
    const scheduledTime = args.ts * 1000;
    const distance = scheduledTime - request.nowMs;
    if (Math.abs(distance) > MAX_SCHEDULE_DISTANCE_MS) {
      throw new Error(
        `${new Date(scheduledTime).toISOString()} is more than 5 years in the ${distance > 0 ? "future" : "past"}`,
      );
    }
    // The function must exist when it is scheduled, though it runs with the
    // code of its time (convex-backend `validate_schedule_args`).
    const { module, exportName } = canonicalizeUdfPath(target.udfPath);
    if (!this.#runner.hasModule(module, target.componentPath)) {
      throw new Error(
        `Attempted to schedule function at nonexistent path: ${module}.js`,
      );
    }
    if (
      this.#runner.functionKind(target.udfPath, target.componentPath) === null
    ) {
      throw new Error(
        `Attempted to schedule function, but no exported function ${exportName} found in the file: ${module}.js. Did you forget to export it?`,
      );
    }
    const fnArgs = jsonToConvex((args.args ?? {}) as JSONValue);
    // The stored name is the canonical path, "module.js:function" (convex-backend
    // `PublicScheduledJob.name` is a `CanonicalizedUdfPath`).
    return {
      name: `${module}.js:${exportName}`,
      componentPath: target.componentPath,
      fnArgs,
      scheduledTime,
    };
  }

  // ---- the executor -------------------------------------------------------------

  #wake(): void {
    if (this.#closed || !this.#started) return;
    if (this.#scanning !== null) {
      this.#scanAgain = true;
      return;
    }
    this.#scanning = this.#runDue()
      .catch((error: unknown) => {
        if (!this.#closed)
          console.error("The scheduler failed to read its queue:", error);
      })
      .finally(() => {
        this.#scanning = null;
        if (this.#scanAgain) {
          this.#scanAgain = false;
          this.#wake();
        }
      });
  }

  /** Starts every due job the parallelism allows and sets a timer for the next one. */
  async #runDue(): Promise<void> {
    const now = this.#clock.now();
    const free = EXECUTION_PARALLELISM - this.#running.size;
    const { due, nextAt } = await this.#runner.runSystem((tx) => {
      const due: Job[] = [];
      let nextAt: number | null = null;
      for (const table of this.#jobTables()) {
        for (const job of readJobs(tx, table, BY_STATE_SCHEDULED_TIME, [
          eq("state.kind", "pending"),
        ])) {
          if (this.#running.has(job._id)) continue;
          if (job.scheduledTime > now || due.length >= free) {
            if (nextAt === null || job.scheduledTime < nextAt)
              nextAt = job.scheduledTime;
            break;
          }
          due.push(job);
        }
      }
      if (now - this.#lastGc >= GC_INTERVAL_MS) {
        this.#lastGc = now;
        this.#collectGarbage(tx, now);
      }
      return { due, nextAt };
    });
    if (this.#closed) return;
    this.#cancelTimer?.();
    this.#cancelTimer = null;
    // When every slot is busy, a finishing job wakes the executor instead.
    if (
      nextAt !== null &&
      this.#running.size + due.length < EXECUTION_PARALLELISM
    ) {
      this.#cancelTimer = this.#clock.setTimer(
        () => this.#wake(),
        nextAt - now,
      );
    }
    for (const job of due) {
      this.#running.add(job._id);
      void this.#execute(job)
        .catch((error: unknown) => {
          // After close the database may be gone under a running job.
          if (!this.#closed)
            console.error(`The scheduler failed to run ${job.name}:`, error);
        })
        .finally(() => {
          this.#running.delete(job._id);
          this.#wake();
        });
    }
  }

  async #execute(job: Job): Promise<void> {
    const id = job._id;
    const args = convexToJson(job.args);
    const componentPath =
      job.componentPath ?? componentOfTable(this.#tableOf(id));
    const kind = this.#runner.functionKind(job.name, componentPath);
    switch (kind) {
      case "mutation":
        await this.#runner.runMutation(
          {
            path: job.name,
            componentPath,
            args,
            job: {
              id,
              // The mutation sees its own job as inProgress; other
              // transactions see it pending until it commits.
              begin: (tx) => this.#start(tx, id),
              succeed: (tx) => this.#complete(tx, id, { kind: "success" }),
              fail: (tx, error) =>
                this.#complete(tx, id, { kind: "failed", error }),
            },
          },
          "any",
        );
        return;
      case "action": {
        const started = await this.#runner.runSystem((tx) =>
          this.#start(tx, id),
        );
        if (!started) return;
        const outcome = await this.#runner.runAction(
          { path: job.name, componentPath, args, scheduledJobId: id },
          "any",
        );
        await this.#runner.runSystem((tx) => {
          if (this.#stateOf(tx, id) !== "inProgress") return;
          this.#complete(
            tx,
            id,
            outcome.status === "success"
              ? { kind: "success" }
              : {
                  kind: "failed",
                  error: outcome.error.trace,
                },
          );
        });
        return;
      }
      case "query":
      case null: {
        const { module, exportName } = canonicalizeUdfPath(job.name);
        const error =
          kind === "query"
            ? `Unsupported function type. "${exportName}" in module "${module}.js" is defined as a query. Only mutation and action can be scheduled.`
            : `Could not find function for '${module}:${exportName}'. Did you forget to run \`npx convex dev\`?`;
        await this.#runner.runSystem((tx) =>
          this.#complete(tx, id, { kind: "failed", error }),
        );
        return;
      }
      default:
        kind satisfies never;
    }
  }

  /** The app's and every component's `_scheduled_functions`. */
  #jobTables(): string[] {
    return this.#runner
      .componentPaths()
      .map((path) => internalTableName(path, SCHEDULED_FUNCTIONS));
  }

  /** The job table an ID belongs to (the app's for anything else). */
  #tableOf(id: string): string {
    return this.#db.tableOfId(id)?.name ?? SCHEDULED_FUNCTIONS;
  }

  /** pending → inProgress; false when the job was canceled (or ran) meanwhile. */
  #start(tx: Transaction, id: string): boolean {
    const table = this.#tableOf(id);
    const job = tx.get(id, table) as Job | null;
    if (job?.state.kind !== "pending") return false;
    tx.writeSystem(table, id, {
      ...job,
      state: { kind: "inProgress" },
    });
    return true;
  }

  #stateOf(tx: Transaction, id: string): JobState["kind"] | null {
    return (tx.get(id, this.#tableOf(id)) as Job | null)?.state.kind ?? null;
  }

  /**
   * Moves a pending or running job to a final state; a job that already
   * finished (or was canceled) is left alone (convex-backend `SchedulerModel::complete`).
   */
  #complete(
    tx: Transaction,
    id: string,
    state: JobState,
    layer: WriteLayer = tx.root,
  ): void {
    const table = this.#tableOf(id);
    const job = tx.get(id, table, layer) as Job | null;
    if (job === null) return;
    if (job.state.kind !== "pending" && job.state.kind !== "inProgress") return;
    tx.writeSystem(
      table,
      id,
      { ...job, state, completedTime: this.#clock.now() },
      layer,
    );
  }

  /** Deletes up to a batch of jobs that finished more than the retention period ago. */
  #collectGarbage(tx: Transaction, now: number): void {
    let deleted = 0;
    for (const table of this.#jobTables()) {
      for (const job of readJobs(tx, table, BY_COMPLETED_TIME, [
        { type: "Gte", fieldPath: "completedTime", value: 0 },
        {
          type: "Lt",
          fieldPath: "completedTime",
          value: now - COMPLETED_JOB_RETENTION_MS,
        },
      ])) {
        tx.writeSystem(table, job._id, null);
        if (++deleted >= GC_BATCH) return;
      }
    }
  }
}

/** Queries have no `ctx.scheduler`, but a forged syscall could come from one. */
function requireMutation(
  request: RequestContext,
  op: string,
): { tx: Transaction; layer: WriteLayer } {
  if (
    request.udfType !== "mutation" ||
    request.tx === null ||
    request.layer === null ||
    request.layer.readOnly
  ) {
    throw new Error(`${op} can only be called from a mutation`);
  }
  request.tx.assertOpen();
  return { tx: request.tx, layer: request.layer };
}

function requireAction(request: RequestContext, op: string): void {
  if (request.udfType !== "action")
    throw new Error(`${op} can only be called from an action`);
}

function eq(fieldPath: string, value: JSONValue) {
  return { type: "Eq" as const, fieldPath, value };
}

function isJobTable(name: string): boolean {
  return (
    name === SCHEDULED_FUNCTIONS || name.startsWith(`${SCHEDULED_FUNCTIONS}@`)
  );
}

/** "_scheduled_functions@child" → "child"; the app's table → "". */
function componentOfTable(table: string): string {
  const at = table.indexOf("@");
  return at === -1 ? ROOT_COMPONENT : table.slice(at + 1);
}

function* readJobs(
  tx: Transaction,
  table: string,
  indexName: string,
  range: Extract<SerializedQuery["source"], { type: "IndexRange" }>["range"],
): Generator<Job> {
  const query: SerializedQuery = {
    source: {
      type: "IndexRange",
      indexName: `${table}.${indexName}`,
      range,
      order: "asc",
    },
    operators: [],
  };
  // Lazy, so the next due job costs one index step however many are pending.
  // Callers may write while they iterate: the scan merged the transaction's
  // writes when it started, so their own writes do not move jobs under them.
  yield* tx.stream(query) as Generator<Job>;
}
