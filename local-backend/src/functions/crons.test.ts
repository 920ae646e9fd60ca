/**
 * Cron run times, against the cases of convex-backend `model/src/cron_jobs/next_ts.rs`.
 */
import { describe, expect, test } from "vitest";
import { nextCronTime, nextRun, parseCron } from "./crons.ts";

const at = (seconds: number) => seconds * 1000;

describe("next run times", () => {
  test("an interval runs at once, then every interval after the previous run", () => {
    const now = at(1677659700);
    const every = { type: "interval" as const, seconds: 60 };
    expect(nextRun("j", every, null, now)).toBe(now);
    expect(nextRun("j", every, now, now)).toBe(at(1677659760));
  });

  test("hourly, daily, weekly, monthly and cron expressions", () => {
    const cron = (expression: string, after: number) =>
      nextCronTime(parseCron(expression), after);
    // Hourly at :05, from 08:35 on Mar 1 2023.
    expect(cron("5 * * * *", at(1677659700))).toBe(at(1677661500));
    expect(cron("5 * * * *", at(1677661500))).toBe(at(1677665100));
    // Daily at 08:30, from 08:35 on Feb 28 2023.
    expect(cron("30 8 * * *", at(1677573300))).toBe(at(1677659400));
    expect(cron("30 8 * * *", at(1677659400))).toBe(at(1677745800));
    // Tuesdays at 12:30.
    expect(cron("30 12 * * 2", at(1677573300))).toBe(at(1677587400));
    expect(cron("30 12 * * 2", at(1677587400))).toBe(at(1678192200));
    // The 1st of the month at 12:30.
    expect(cron("30 12 1 * *", at(1677573300))).toBe(at(1677673800));
    expect(cron("30 12 1 * *", at(1677673800))).toBe(at(1680352200));
    // Mondays and Fridays at 12:00.
    expect(cron("0 12 * * 1,5", at(1677573300))).toBe(at(1677844800));
    expect(cron("0 12 * * 1,5", at(1677844800))).toBe(at(1678104000));
  });

  test("steps, ranges and the every-minute expression", () => {
    const from = Date.UTC(2026, 0, 1, 10, 7, 30);
    expect(nextCronTime(parseCron("* * * * *"), from)).toBe(
      Date.UTC(2026, 0, 1, 10, 8),
    );
    expect(nextCronTime(parseCron("*/15 * * * *"), from)).toBe(
      Date.UTC(2026, 0, 1, 10, 15),
    );
    expect(nextCronTime(parseCron("0 9-17/4 * * *"), from)).toBe(
      Date.UTC(2026, 0, 1, 13, 0),
    );
    // February 29th: the next leap year.
    expect(nextCronTime(parseCron("0 0 29 2 *"), from)).toBe(
      Date.UTC(2028, 1, 29),
    );
  });

  test("a bad expression names the field", () => {
    expect(() => parseCron("0 12 * * 7")).toThrow(/day of week "7"/);
    expect(() => parseCron("* * *")).toThrow(/expected 5 fields/);
  });
});
