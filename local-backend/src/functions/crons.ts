/**
 * `convex/crons.ts`: runs the jobs its default-exported `cronJobs()` declares
 * (convex 1.48 `server/cron.ts` `Crons.export()`), as convex-backend
 * `application/src/cron_jobs/mod.rs` and `model/src/cron_jobs/next_ts.rs` do.
 *
 * Each job is a `_cron_jobs` document `{name, cronSpec, state, prevTs?, nextTs}`
 * (times in ms), so the schedule survives restarts. A build that adds or
 * changes a job computes its first `nextTs` from now (an interval job runs at
 * once, as on Convex); an unchanged job keeps its state; a removed one is
 * deleted. States: `pending` ──(action starts)──▶ `inProgress` ──▶ `pending`;
 * a mutation goes back to `pending` in the commit of its own writes.
 *
 * Missed runs after downtime: a job whose `nextTs` passed runs once; then
 * every further run time already in the past is skipped and logged as
 * "Skipping N run(s) of job … because multiple scheduled runs are in the past"
 * (`complete_job_run`). Each run prints one line to the backend's output.
 *
 * Usage:
 *   const crons = new CronRunner(db, runner, { logger });
 *   await crons.sync(isolate.modules.crons?.default);   // after each build
 */
import {
  convexToJson,
  type JSONValue,
  jsonToConvex,
  type Value,
} from "convex/values";
import type { Doc } from "../values/wire.ts";
import type { FunctionRunner } from "./functionRunner.ts";
import { canonicalizeUdfPath } from "./functionRunner.ts";
import { type Clock, type JobRunnerLogger, SYSTEM_CLOCK } from "./scheduler.ts";
import type { Transaction } from "./transaction.ts";

export const CRON_JOBS = "_cron_jobs";
const CRONS_MODULE = "crons";
const MINUTE_MS = 60_000;
/** How far ahead a cron expression is searched for its next run. */
const MAX_SEARCH_DAYS = 366 * 8;
const DAYS_OF_WEEK = [
  "sunday",
  "monday",
  "tuesday",
  "wednesday",
  "thursday",
  "friday",
  "saturday",
];

/** A schedule as `Crons.export()` writes it. */
type ExportedSchedule =
  | { type: "interval"; seconds?: number; minutes?: number; hours?: number }
  | { type: "hourly"; minuteUTC?: number }
  | { type: "daily"; hourUTC: number; minuteUTC?: number }
  | { type: "weekly"; dayOfWeek: string; hourUTC: number; minuteUTC?: number }
  | { type: "monthly"; day: number; hourUTC: number; minuteUTC?: number }
  | { type: "cron"; cron: string };

type ExportedCron = {
  name: string;
  args: JSONValue[];
  schedule: ExportedSchedule;
};

/** convex-backend `CronSchedule`: an interval in seconds, or a cron expression. */
type CronSchedule =
  { type: "interval"; seconds: number } | { type: "cron"; expression: string };

type CronJob = Doc & {
  name: string;
  cronSpec: { udfPath: string; udfArgs: Value[]; cronSchedule: CronSchedule };
  state: "pending" | "inProgress";
  prevTs?: number;
  nextTs: number;
};

export class CronRunner {
  readonly #runner: FunctionRunner;
  readonly #clock: Clock;
  readonly #logger: JobRunnerLogger;
  /** The jobs as last committed; only this class writes `_cron_jobs`. */
  #jobs = new Map<string, CronJob>();
  readonly #running = new Set<string>();
  #cancelTimer: (() => void) | null = null;
  #closed = false;

  constructor(
    runner: FunctionRunner,
    options: { clock?: Clock; logger: JobRunnerLogger },
  ) {
    this.#runner = runner;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#logger = options.logger;
  }

  /**
   * Makes `_cron_jobs` match a build's `crons.ts` export (or its absence),
   * finishes actions a crash cut off, and sets the timer for the next run.
   */
  async sync(exported: unknown): Promise<void> {
    const declared = parseExport(exported);
    const cutOff: CronJob[] = [];
    const jobs = await this.#runner.runSystem((tx) => {
      const now = this.#clock.now();
      const existing = new Map<string, CronJob>();
      for (const job of tx.stream({
        source: { type: "FullTableScan", tableName: CRON_JOBS, order: "asc" },
        operators: [],
      }) as Generator<CronJob>) {
        existing.set(job.name, job);
      }
      const result = new Map<string, CronJob>();
      for (const [name, spec] of declared) {
        const old = existing.get(name);
        existing.delete(name);
        if (old !== undefined && sameSpec(old.cronSpec, spec)) {
          // Running now (this process) or cut off by a crash (a previous one).
          if (old.state === "inProgress" && !this.#running.has(name))
            cutOff.push(old);
          result.set(name, old);
          continue;
        }
        const fields = {
          name,
          cronSpec: spec,
          state: "pending" as const,
          nextTs: nextRun(name, spec.cronSchedule, null, now),
        };
        if (old === undefined) {
          const id = tx.insertSystem(CRON_JOBS, fields);
          result.set(name, tx.get(id, CRON_JOBS) as CronJob);
        } else {
          const job = {
            ...fields,
            _id: old._id,
            _creationTime: old._creationTime,
          };
          tx.writeSystem(CRON_JOBS, old._id, job);
          result.set(name, job);
        }
      }
      for (const removed of existing.values())
        tx.writeSystem(CRON_JOBS, removed._id, null);
      return result;
    });
    this.#jobs = jobs;
    for (const job of cutOff) {
      this.#logger.error(
        `Cron job "${job.name}" (${displayPath(job.cronSpec.udfPath)}) failed: Transient error while executing action`,
      );
      await this.#runner.runSystem((tx) =>
        this.#completeRun(tx, job, "action"),
      );
    }
    this.#arm();
  }

  close(): void {
    this.#closed = true;
    this.#cancelTimer?.();
  }

  /** A timer for the earliest `nextTs` among jobs not running. */
  #arm(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = null;
    if (this.#closed) return;
    let next = Infinity;
    for (const job of this.#jobs.values()) {
      if (!this.#running.has(job.name)) next = Math.min(next, job.nextTs);
    }
    if (next === Infinity) return;
    this.#cancelTimer = this.#clock.setTimer(
      () => this.#runDue(),
      next - this.#clock.now(),
    );
  }

  #runDue(): void {
    const now = this.#clock.now();
    for (const job of this.#jobs.values()) {
      if (job.nextTs > now || this.#running.has(job.name)) continue;
      this.#running.add(job.name);
      void this.#run(job)
        .catch((error: unknown) => {
          if (!this.#closed)
            this.#logger.error(
              `Cron job "${job.name}" could not run: ${(error as Error).message}`,
            );
        })
        .finally(() => {
          this.#running.delete(job.name);
          this.#arm();
        });
    }
    this.#arm();
  }

  async #run(job: CronJob): Promise<void> {
    const { udfPath, udfArgs } = job.cronSpec;
    const args = convexToJson(udfArgs);
    const kind = this.#runner.functionKind(udfPath);
    switch (kind) {
      case "mutation": {
        let error: string | null = null;
        let ran = false;
        await this.#runner.runMutation(
          {
            path: udfPath,
            args,
            job: {
              begin: (tx) => (ran = this.#isCurrent(tx, job)),
              succeed: (tx) => this.#completeRun(tx, job, "mutation"),
              fail: (tx, message) => {
                error = message;
                this.#completeRun(tx, job, "mutation");
              },
            },
          },
          "any",
        );
        if (ran) this.#report(job, error);
        return;
      }
      case "action": {
        const started = await this.#runner.runSystem((tx) => {
          if (!this.#isCurrent(tx, job)) return false;
          this.#save(tx, { ...job, state: "inProgress" });
          return true;
        });
        if (!started) return;
        const outcome = await this.#runner.runAction(
          { path: udfPath, args },
          "any",
        );
        await this.#runner.runSystem((tx) =>
          this.#completeRun(tx, this.#jobs.get(job.name) ?? job, "action"),
        );
        this.#report(
          job,
          outcome.status === "success" ? null : outcome.error.trace.trimEnd(),
        );
        return;
      }
      case "query":
      case null:
        await this.#runner.runSystem((tx) =>
          this.#completeRun(tx, job, "mutation"),
        );
        this.#report(
          job,
          kind === "query"
            ? `Cron trying to execute ${udfPath} which is a query function. Only mutations and actions can be crons.`
            : `Cron trying to execute missing function ${udfPath}.`,
        );
        return;
      default:
        kind satisfies never;
    }
  }

  /** The job as this run saw it is still the committed one (not changed by a rebuild). */
  #isCurrent(tx: Transaction, job: CronJob): boolean {
    const current = tx.get(job._id, CRON_JOBS) as CronJob | null;
    return (
      current !== null &&
      current.nextTs === job.nextTs &&
      sameSpec(current.cronSpec, job.cronSpec)
    );
  }

  /** After a run: the next run time, skipping (and logging) those already past. */
  #completeRun(
    tx: Transaction,
    job: CronJob,
    kind: "mutation" | "action",
  ): void {
    const current = tx.get(job._id, CRON_JOBS) as CronJob | null;
    if (current === null || !sameSpec(current.cronSpec, job.cronSpec)) return;
    const now = this.#clock.now();
    const schedule = job.cronSpec.cronSchedule;
    const prevTs = job.nextTs;
    let nextTs = nextRun(job.name, schedule, prevTs, now);
    let skipped = 0;
    while (nextTs < now) {
      skipped++;
      nextTs = nextRun(job.name, schedule, nextTs, now);
    }
    if (skipped > 0) {
      const line = `Skipping ${skipped} run(s) of job ${job._id} because multiple scheduled runs are in the past`;
      const prefix = `[CONVEX ${kind === "mutation" ? "M" : "A"}(${displayPath(job.cronSpec.udfPath)})]`;
      this.#logger.error(`${prefix} ${line}`);
    }
    this.#save(tx, { ...current, state: "pending", prevTs, nextTs });
  }

  #save(tx: Transaction, job: CronJob): void {
    tx.writeSystem(CRON_JOBS, job._id, job);
    this.#jobs.set(job.name, job);
  }

  #report(job: CronJob, error: string | null): void {
    const what = `Cron job "${job.name}" ran ${displayPath(job.cronSpec.udfPath)}`;
    if (error === null) this.#logger.info(`${what}: success`);
    else this.#logger.error(`${what}: failed: ${error}`);
  }
}

/** `crons.ts`'s default export as specs by name; nothing when there is none. */
function parseExport(exported: unknown): Map<string, CronJob["cronSpec"]> {
  const specs = new Map<string, CronJob["cronSpec"]>();
  if (exported === undefined) return specs;
  const crons = exported as { isCrons?: unknown; export?: () => string };
  if (crons.isCrons !== true || typeof crons.export !== "function") {
    throw new Error(
      `${CRONS_MODULE}.ts must \`export default cronJobs()\` (from "convex/server")`,
    );
  }
  const entries = JSON.parse(crons.export()) as Record<string, ExportedCron>;
  for (const [name, entry] of Object.entries(entries)) {
    const { module, exportName } = canonicalizeUdfPath(entry.name);
    specs.set(name, {
      udfPath: `${module}:${exportName}`,
      udfArgs: entry.args.map((a) => jsonToConvex(a)),
      cronSchedule: toCronSchedule(entry.schedule),
    });
  }
  return specs;
}

/** convex-backend `next_ts.rs`: the fixed schedules become cron expressions. */
function toCronSchedule(schedule: ExportedSchedule): CronSchedule {
  switch (schedule.type) {
    case "interval":
      return {
        type: "interval",
        seconds:
          schedule.seconds ??
          (schedule.minutes !== undefined
            ? schedule.minutes * 60
            : (schedule.hours ?? 0) * 3600),
      };
    case "hourly":
      return { type: "cron", expression: `${minute(schedule)} * * * *` };
    case "daily":
      return {
        type: "cron",
        expression: `${minute(schedule)} ${schedule.hourUTC} * * *`,
      };
    case "weekly":
      return {
        type: "cron",
        expression: `${minute(schedule)} ${schedule.hourUTC} * * ${DAYS_OF_WEEK.indexOf(schedule.dayOfWeek)}`,
      };
    case "monthly":
      return {
        type: "cron",
        expression: `${minute(schedule)} ${schedule.hourUTC} ${schedule.day} * *`,
      };
    case "cron":
      parseCron(schedule.cron);
      return { type: "cron", expression: schedule.cron };
    default:
      schedule satisfies never;
      throw new Error(`Unknown cron schedule ${JSON.stringify(schedule)}`);
  }
}

/**
 * An omitted `minuteUTC` lets Convex pick one so that jobs spread over the
 * hour; here the pick is marked "R" and made per job in `nextRun`.
 */
function minute(schedule: { minuteUTC?: number }): string {
  return schedule.minuteUTC === undefined ? "R" : String(schedule.minuteUTC);
}

/** `compute_next_ts`: an interval counts from the previous run (the first is now). */
export function nextRun(
  name: string,
  schedule: CronSchedule,
  prevTs: number | null,
  now: number,
): number {
  if (schedule.type === "interval") {
    return prevTs === null ? now : prevTs + schedule.seconds * 1000;
  }
  const expression = schedule.expression.replace(
    /^R /,
    `${stableMinute(name)} `,
  );
  return nextCronTime(parseCron(expression), prevTs ?? now);
}

/** The same minute for a job on every run and restart, spread over the hour by name. */
function stableMinute(name: string): number {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return hash % 60;
}

type CronFields = {
  minutes: Set<number>;
  hours: Set<number>;
  daysOfMonth: Set<number>;
  months: Set<number>;
  daysOfWeek: Set<number>;
  /** Both day fields restricted: a day matches either (standard cron). */
  eitherDay: boolean;
};

const FIELD_RANGES: [string, number, number][] = [
  ["minute", 0, 59],
  ["hour", 0, 23],
  ["day of month", 1, 31],
  ["month", 1, 12],
  ["day of week", 0, 6],
];

/** A five-field cron expression: `*`, numbers, `a-b` ranges, `,` lists and `/n` steps. */
export function parseCron(expression: string): CronFields {
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== 5) {
    throw new Error(
      `Invalid cron expression "${expression}": expected 5 fields (minute hour day-of-month month day-of-week)`,
    );
  }
  const sets = parts.map((part, i) => {
    const [fieldName, min, max] = FIELD_RANGES[i];
    const values = new Set<number>();
    for (const item of part.split(",")) {
      const match = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(item);
      if (match === null) {
        throw new Error(
          `Invalid cron expression "${expression}": bad ${fieldName} "${item}"`,
        );
      }
      const start = match[1] === "*" ? min : Number(match[2]);
      const end =
        match[1] === "*"
          ? max
          : match[3] !== undefined
            ? Number(match[3])
            : match[4] !== undefined
              ? max
              : start;
      const step = match[4] !== undefined ? Number(match[4]) : 1;
      if (start < min || end > max || start > end || step < 1) {
        throw new Error(
          `Invalid cron expression "${expression}": ${fieldName} "${item}" is outside ${min}-${max}`,
        );
      }
      for (let v = start; v <= end; v += step) values.add(v);
    }
    return values;
  });
  return {
    minutes: sets[0],
    hours: sets[1],
    daysOfMonth: sets[2],
    months: sets[3],
    daysOfWeek: sets[4],
    eitherDay: parts[2] !== "*" && parts[4] !== "*",
  };
}

/** The first minute strictly after `after` (ms, UTC) that the expression matches. */
export function nextCronTime(fields: CronFields, after: number): number {
  const start = new Date(Math.floor(after / MINUTE_MS) * MINUTE_MS + MINUTE_MS);
  const day = new Date(
    Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate()),
  );
  for (let i = 0; i < MAX_SEARCH_DAYS; i++) {
    if (dayMatches(fields, day)) {
      const sameDay = day.getTime() === startOfDay(start);
      for (const hour of [...fields.hours].sort((a, b) => a - b)) {
        if (sameDay && hour < start.getUTCHours()) continue;
        for (const m of [...fields.minutes].sort((a, b) => a - b)) {
          const time = day.getTime() + hour * 3600_000 + m * MINUTE_MS;
          if (time >= start.getTime()) return time;
        }
      }
    }
    day.setUTCDate(day.getUTCDate() + 1);
  }
  throw new Error("Could not compute next timestamp for cron");
}

function startOfDay(date: Date): number {
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate());
}

function dayMatches(fields: CronFields, day: Date): boolean {
  if (!fields.months.has(day.getUTCMonth() + 1)) return false;
  const dom = fields.daysOfMonth.has(day.getUTCDate());
  const dow = fields.daysOfWeek.has(day.getUTCDay());
  return fields.eitherDay ? dom || dow : dom && dow;
}

function sameSpec(a: CronJob["cronSpec"], b: CronJob["cronSpec"]): boolean {
  return JSON.stringify(convexToJson(a)) === JSON.stringify(convexToJson(b));
}

/** "crons:tick" as the backend's output names functions. */
function displayPath(udfPath: string): string {
  return canonicalizeUdfPath(udfPath).canonical;
}
