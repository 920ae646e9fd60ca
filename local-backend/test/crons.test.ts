/**
 * `convex/crons.ts` under a fake clock: runs happen when their time comes,
 * each run shows in the backend's output, the schedule survives a restart,
 * and runs missed while the backend was down are skipped as Convex does.
 */
import { fileURLToPath } from "node:url";
import { makeFunctionReference } from "convex/server";
import { afterEach, describe, expect, test } from "vitest";
import type { Clock } from "../src/functions/scheduler.ts";
import { startTestBackend, type TestBackend, waitFor } from "./helpers.ts";

const FUNCTIONS = fileURLToPath(
  new URL("./fixture-crons/convex", import.meta.url),
);
const count = makeFunctionReference<"query", { job: string }, number>(
  "ticks:count",
);
const MINUTE_MS = 60_000;
/** 12:00:30 UTC: half a minute before the every-minute cron's first run. */
const T0 = Date.UTC(2026, 0, 1, 12, 0, 30);

/** Time that moves only when the test says; due timers fire as it passes them. */
class FakeClock implements Clock {
  #now: number;
  readonly #timers = new Set<{ at: number; fn: () => void }>();

  constructor(start: number) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimer(fn: () => void, ms: number): () => void {
    const timer = { at: this.#now + Math.max(0, ms), fn };
    this.#timers.add(timer);
    if (ms <= 0) setImmediate(() => this.#fire());
    return () => this.#timers.delete(timer);
  }

  set(time: number): void {
    this.#now = time;
    this.#fire();
  }

  advance(ms: number): void {
    this.set(this.#now + ms);
  }

  #fire(): void {
    for (const timer of [...this.#timers].sort((a, b) => a.at - b.at)) {
      if (timer.at > this.#now) continue;
      this.#timers.delete(timer);
      timer.fn();
    }
  }
}

let h: TestBackend | undefined;

afterEach(async () => {
  await h?.stop();
  h = undefined;
});

function runsOf(backend: TestBackend, job: string): number {
  return backend.logs.lines.filter((l) =>
    l.startsWith(`Cron job "${job}" ran ticks:`),
  ).length;
}

async function ticks(backend: TestBackend, job: string): Promise<number> {
  return await backend.httpClient().query(count, { job });
}

describe("cron jobs", () => {
  test("a one-minute cron runs once a minute, and each run shows in the output", async () => {
    const clock = new FakeClock(T0);
    const backend = (h = await startTestBackend({
      functions: FUNCTIONS,
      clock,
    }));
    // An interval job runs as soon as it is deployed.
    await waitFor(
      () => runsOf(backend, "interval") === 1,
      "the first interval run",
    );
    await waitFor(() => runsOf(backend, "hourly action") === 1, "the action");
    expect(await ticks(backend, "minute")).toBe(0);

    clock.advance(30_000);
    await waitFor(() => runsOf(backend, "every minute") === 1, "12:01");
    expect(await ticks(backend, "minute")).toBe(1);
    expect(await ticks(backend, "interval")).toBe(1);

    clock.advance(MINUTE_MS);
    await waitFor(() => runsOf(backend, "every minute") === 2, "12:02");
    await waitFor(() => runsOf(backend, "interval") === 2, "12:01:30");
    expect(await ticks(backend, "minute")).toBe(2);
    expect(await ticks(backend, "interval")).toBe(2);
    expect(await ticks(backend, "action")).toBe(1);
    expect(backend.logs.lines).toContain(
      'Cron job "every minute" ran ticks:tick: success',
    );
  });

  test("after downtime a missed job runs once and the other missed runs are skipped", async () => {
    const clock = new FakeClock(T0);
    const backend = (h = await startTestBackend({
      functions: FUNCTIONS,
      clock,
    }));
    await waitFor(() => runsOf(backend, "interval") === 1, "the first run");
    await backend.closeBackend();

    // Down from 12:00:30 to 12:10:45: the interval job (due 12:01:30) and
    // the every-minute job (due 12:01) each missed ten runs.
    clock.set(T0 + 10 * MINUTE_MS + 15_000);
    await backend.restart();
    await waitFor(() => runsOf(backend, "interval") === 2, "the catch-up run");
    await waitFor(() => runsOf(backend, "every minute") === 1, "its run");
    const skipped = backend.logs.errors.filter((l) =>
      /Skipping 9 run\(s\) of job \S+ because multiple scheduled runs are in the past/.test(
        l,
      ),
    );
    expect(skipped).toEqual([
      expect.stringContaining("[CONVEX M(ticks:tick)]"),
      expect.stringContaining("[CONVEX M(ticks:tick)]"),
    ]);
    expect(await ticks(backend, "interval")).toBe(2);
    expect(await ticks(backend, "minute")).toBe(1);
    // The hourly action is not due until 13:00:30, restart or not.
    expect(await ticks(backend, "action")).toBe(1);

    // Back on schedule: the next runs are at 12:11 and 12:11:30.
    clock.set(T0 + 11 * MINUTE_MS);
    await waitFor(() => runsOf(backend, "interval") === 3, "12:11:30");
    await waitFor(() => runsOf(backend, "every minute") === 2, "12:11");
    expect(await ticks(backend, "interval")).toBe(3);
  });
});
