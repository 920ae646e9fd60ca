/**
 * `ctx.scheduler` through the real clients: jobs run after their scheduling
 * mutation commits, their `_scheduled_functions` documents move through
 * Convex's states, a rolled-back mutation schedules nothing, cancel stops a
 * pending job, and pending jobs survive a restart.
 */
import type { GenericId } from "convex/values";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  api,
  rejection,
  startTestBackend,
  type TestBackend,
  waitFor,
} from "./helpers.ts";

type Job = {
  _id: GenericId<"_scheduled_functions">;
  _creationTime: number;
  name: string;
  args: unknown[];
  scheduledTime: number;
  completedTime?: number;
  state: { kind: string; error?: string };
};

const HOUR_MS = 60 * 60 * 1000;

let h: TestBackend;

beforeEach(async () => {
  h = await startTestBackend();
});

afterEach(async () => {
  await h.stop();
});

type JobId = GenericId<"_scheduled_functions">;

async function job(id: JobId): Promise<Job | null> {
  return await h.httpClient().query(api.scheduled.job, { id });
}

async function finished(id: JobId): Promise<Job> {
  return await waitFor(async () => {
    const found = await job(id);
    return found !== null &&
      found.state.kind !== "pending" &&
      found.state.kind !== "inProgress"
      ? found
      : null;
  }, `job ${id} to finish`);
}

async function bodies(): Promise<string[]> {
  const messages = (await h
    .httpClient()
    .query(api.messages.byAuthor, { author: "scheduled" })) as {
    body: string;
  }[];
  return messages.map((m) => m.body).sort();
}

describe("scheduled mutations", () => {
  test("a job runs once after its mutation commits and ends in success", async () => {
    const http = h.httpClient();
    const before = Date.now();
    const id = await http.mutation(api.scheduled.later, {
      body: "soon",
      delayMs: 0,
    });
    const done = await finished(id);
    expect(done).toMatchObject({
      _id: id,
      name: "scheduled.js:record",
      args: [{ body: "soon" }],
      state: { kind: "success" },
    });
    expect(done.scheduledTime).toBeGreaterThanOrEqual(before);
    expect(done.completedTime).toBeGreaterThanOrEqual(done.scheduledTime);
    expect(await bodies()).toEqual(["soon"]);
  });

  test("runAt keeps the time it was given", async () => {
    const time = Date.now() + HOUR_MS;
    const id = await h
      .httpClient()
      .mutation(api.scheduled.at, { body: "at", time });
    expect(await job(id)).toMatchObject({
      scheduledTime: time,
      state: { kind: "pending" },
    });
  });

  test("a mutation that rolls back schedules nothing", async () => {
    const http = h.httpClient();
    const error = await rejection(
      http.mutation(api.scheduled.laterThenFail, { body: "never" }),
    );
    expect(error.message).toContain("rolled back");
    // A later job that does run shows the executor had its chance.
    await finished(
      await http.mutation(api.scheduled.later, { body: "after", delayMs: 0 }),
    );
    const jobs = (await http.query(api.scheduled.jobs, {})) as Job[];
    expect(jobs.map((j) => j.args)).toEqual([[{ body: "after" }]]);
    expect(await bodies()).toEqual(["after"]);
  });

  test("a failing job ends in failed with its error, and its writes are dropped", async () => {
    const id = await h.httpClient().mutation(api.scheduled.later, {
      body: "boom",
      delayMs: 0,
      kind: "failing",
    });
    const done = await finished(id);
    expect(done.state.kind).toBe("failed");
    expect(done.state.error).toContain("Uncaught Error: failing job boom");
    expect(done.state.error).not.toContain("Request ID");
    expect(done.completedTime).toEqual(expect.any(Number));
    expect(await bodies()).toEqual([]);
  });

  test("cancel stops a pending job; canceling again changes nothing", async () => {
    const http = h.httpClient();
    const id = await http.mutation(api.scheduled.later, {
      body: "canceled",
      delayMs: HOUR_MS,
    });
    await http.mutation(api.scheduled.cancel, { id });
    const canceled = await job(id);
    expect(canceled).toMatchObject({ state: { kind: "canceled" } });
    expect(canceled?.completedTime).toEqual(expect.any(Number));
    await http.mutation(api.scheduled.cancel, { id });
    expect(await job(id)).toEqual(canceled);
    expect(await bodies()).toEqual([]);
  });

  test("a job canceled while its mutation runs commits nothing", async () => {
    const http = h.httpClient();
    const id = await http.mutation(api.scheduled.later, {
      body: "canceled while running",
      delayMs: 0,
      kind: "slowMutation",
    });
    // The job has started computing (it runs for several hundred ms, moved
    // off the main thread, holding no other mutation).
    await new Promise((resolve) => setTimeout(resolve, 150));
    await http.mutation(api.scheduled.cancel, { id });
    // Longer than the run's second: it ended, overlapped by the cancel.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(await job(id)).toMatchObject({ state: { kind: "canceled" } });
    expect(await bodies()).toEqual([]);
  });

  test("a job can schedule the next one", async () => {
    const http = h.httpClient();
    await finished(
      await http.mutation(api.scheduled.chain, { body: "second", delayMs: 0 }),
    );
    await waitFor(
      async () => (await bodies()).includes("second"),
      "the chained job",
    );
  });

  test("jobs run in scheduledTime order, many at once", async () => {
    const http = h.httpClient();
    await http.mutation(api.scheduled.many, { count: 30, delayMs: 0 });
    await waitFor(
      async () => (await bodies()).length === 30,
      "thirty jobs to run",
      30_000,
    );
    const jobs = (await http.query(api.scheduled.jobs, {})) as Job[];
    expect(jobs.map((j) => j.state.kind)).toEqual(Array(30).fill("success"));
  });

  test("scheduling a function that does not exist fails with Convex's text", async () => {
    const http = h.httpClient();
    expect(
      (
        await rejection(
          http.mutation(api.scheduled.missing, { name: "nowhere:fn" }),
        )
      ).message,
    ).toContain(
      "Attempted to schedule function at nonexistent path: nowhere.js",
    );
    expect(
      (
        await rejection(
          http.mutation(api.scheduled.missing, { name: "scheduled:nope" }),
        )
      ).message,
    ).toContain(
      "Attempted to schedule function, but no exported function nope found in the file: scheduled.js. Did you forget to export it?",
    );
  });

  test("more than 1000 jobs from one mutation fail with Convex's limit error", async () => {
    const error = await rejection(
      h
        .httpClient()
        .mutation(api.scheduled.many, { count: 1001, delayMs: HOUR_MS }),
    );
    expect(error.message).toContain(
      "Too many functions scheduled by this mutation (limit: 1000)",
    );
    expect(await h.httpClient().query(api.scheduled.jobs, {})).toEqual([]);
  });
});

describe("scheduled actions and scheduling from actions", () => {
  test("a scheduled action runs and ends in success", async () => {
    const id = await h.httpClient().mutation(api.scheduled.later, {
      body: "via action",
      delayMs: 0,
      kind: "action",
    });
    expect(await finished(id)).toMatchObject({
      name: "scheduled.js:recordViaAction",
      state: { kind: "success" },
    });
    expect(await bodies()).toEqual(["via action"]);
  });

  test("an action schedules at once, and can cancel what it scheduled", async () => {
    const http = h.httpClient();
    const ran = await http.action(api.scheduled.fromAction, {
      body: "from action",
      delayMs: 0,
      cancel: false,
    });
    expect(await finished(ran)).toMatchObject({ state: { kind: "success" } });
    const canceled = await http.action(api.scheduled.fromAction, {
      body: "canceled from action",
      delayMs: HOUR_MS,
      cancel: true,
    });
    expect(await job(canceled)).toMatchObject({
      state: { kind: "canceled" },
    });
    expect(await bodies()).toEqual(["from action"]);
  });
});

describe("durability", () => {
  test("a job pending at shutdown runs once after a restart", async () => {
    const id = await h.httpClient().mutation(api.scheduled.later, {
      body: "after restart",
      delayMs: 300,
    });
    await h.closeBackend();
    await h.restart();
    expect((await finished(id)).state.kind).toBe("success");
    await h.closeBackend();
    await h.restart();
    expect(await bodies()).toEqual(["after restart"]);
  });
});
