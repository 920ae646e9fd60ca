/**
 * Functions moved off the main thread: a query or mutation that computes
 * synchronously for long runs again in an isolate worker, so a synchronous
 * loop holds no other client; it still ends with Convex's timeout error and
 * leaves nothing behind. A legitimate long computation gives the result it
 * would have given on the main thread: its reads, writes, nested calls, log
 * lines and subscriptions work as before.
 */
import { anyApi } from "convex/server";
import v8 from "node:v8";
import vm from "node:vm";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  api,
  recordingClientLogger,
  rejection,
  startTestBackend,
  type TestBackend,
  waitFor,
  withTimeout,
} from "./helpers.ts";

/** convex-backend `crates/isolate/src/termination.rs` `UserTimeoutError`, knob DATABASE_UDF_USER_TIMEOUT. */
const TIMEOUT_ERROR = "Function execution timed out (maximum duration: 1s)";
/** What a client gets: Convex's request prefix, then the error alone (no "Uncaught", no frames). */
const TIMEOUT_MESSAGE = new RegExp(
  `^\\[Request ID: [0-9a-f]+\\] Server Error\\n${TIMEOUT_ERROR.replace(/[()]/g, "\\$&")}\\s*$`,
);
/** Synchronous work far past the main thread's slice, far under the second (~150 ms here). */
const LONG_COMPUTATION = 30_000_000;
const runaway = anyApi.runaway;

/** A full collection (`--expose-gc`'s `gc`, taken without the flag at start-up). */
function collectGarbage(): void {
  v8.setFlagsFromString("--expose-gc");
  (vm.runInNewContext("gc") as () => void)();
}

let h: TestBackend;
beforeAll(async () => {
  h = await startTestBackend();
});
afterAll(async () => {
  await h.stop();
});

/** `promise`, which appends `label` to `order` when it settles. */
function settleOrder<T>(
  order: string[],
  label: string,
  promise: Promise<T>,
): Promise<T> {
  return promise.finally(() => order.push(label));
}

/** Lets a request sent first reach the backend before the next one (never asserted on). */
const headStart = () => new Promise((resolve) => setTimeout(resolve, 50));

describe("a synchronous loop", () => {
  test("in a query: Convex's timeout error, after another client's query and mutation were answered", async () => {
    const order: string[] = [];
    const stuck = settleOrder(
      order,
      "runaway",
      rejection(h.httpClient().query(runaway.syncLoop, {})),
    );
    await headStart();
    const other = h.httpClient();
    const name = `beside-query-${crypto.randomUUID()}`;
    await settleOrder(
      order,
      "mutation",
      other.mutation(api.counters.increment, { name }),
    );
    expect(
      await settleOrder(
        order,
        "query",
        other.query(api.counters.get, { name }),
      ),
    ).toBe(1);
    expect((await stuck).message).toMatch(TIMEOUT_MESSAGE);
    expect(order).toEqual(["mutation", "query", "runaway"]);
  });

  test("in a mutation: Convex's timeout error after another client's query and mutation were answered, and its writes are not committed", async () => {
    const http = h.httpClient();
    const name = `spun-${crypto.randomUUID()}`;
    const order: string[] = [];
    const stuck = settleOrder(
      order,
      "runaway",
      rejection(http.mutation(runaway.writeThenSpin, { name, async: false })),
    );
    await headStart();
    const other = h.httpClient();
    expect(
      await settleOrder(
        order,
        "query",
        other.query(api.counters.get, { name: "never written" }),
      ),
    ).toBeNull();
    // The runaway left the writer slot when it was moved: other mutations
    // commit while it spins.
    expect(
      await settleOrder(
        order,
        "mutation",
        other.mutation(api.counters.increment, { name: `behind-${name}` }),
      ),
    ).toBe(1);
    expect((await stuck).message).toMatch(TIMEOUT_MESSAGE);
    expect(order).toEqual(["query", "mutation", "runaway"]);
    expect(await http.query(api.counters.get, { name })).toBeNull();
  });

  test("several in a row, and at once: each stopped, and the backend keeps serving", async () => {
    const http = h.httpClient();
    for (let i = 0; i < 3; i++) {
      const error = await rejection(http.query(runaway.syncLoop, {}));
      expect(error.message).toMatch(TIMEOUT_MESSAGE);
    }
    const atOnce = await Promise.all(
      [0, 1].map(() =>
        rejection(h.httpClient().query(runaway.syncLoop, {}), 20_000),
      ),
    );
    for (const error of atOnce) expect(error.message).toMatch(TIMEOUT_MESSAGE);
    const name = `after-runaways-${crypto.randomUUID()}`;
    expect(await http.mutation(api.counters.increment, { name })).toBe(1);
    // A long computation still runs off the main thread, in a fresh worker.
    expect(
      await http.query(runaway.computeThenRead, {
        name,
        iterations: LONG_COMPUTATION,
      }),
    ).toEqual({ value: 1, computed: true });
  });
});

describe("a run that allocates without bound", () => {
  test("ends with Convex's out-of-memory error in its worker, and the backend keeps serving", async () => {
    const http = h.httpClient();
    const error = await rejection(http.query(runaway.allocate, {}), 20_000);
    expect(error.message).toMatch(
      /^\[Request ID: [0-9a-f]+\] Server Error\nJavaScript execution ran out of memory \(maximum memory usage: 64 MB\)\s*$/,
    );
    const name = `after-allocating-${crypto.randomUUID()}`;
    expect(await http.mutation(api.counters.increment, { name })).toBe(1);
    // The next long computation gets a fresh worker.
    expect(
      await http.query(runaway.computeThenRead, {
        name,
        iterations: LONG_COMPUTATION,
      }),
    ).toEqual({ value: 1, computed: true });
  });
});

describe("a run that keeps allocating between reads, on the main thread", () => {
  const OUT_OF_MEMORY_MESSAGE =
    /^\[Request ID: [0-9a-f]+\] Server Error\nJavaScript execution ran out of memory \(maximum memory usage: 64 MB\)\s*$/;

  test.each([
    ["arrays", false],
    ["ArrayBuffers", true],
  ])(
    "of %s: ends with Convex's out-of-memory error, not at its time limit",
    async (_kind, buffers) => {
      const http = h.httpClient();
      const error = await rejection(
        http.query(runaway.allocateBetweenReads, { buffers }),
        20_000,
      );
      expect(error.message).toMatch(OUT_OF_MEMORY_MESSAGE);
      const name = `after-allocating-between-reads-${crypto.randomUUID()}`;
      expect(await http.mutation(api.counters.increment, { name })).toBe(1);
    },
  );

  test("in a mutation: out of memory, and its write does not commit", async () => {
    const http = h.httpClient();
    const name = `insert-then-allocate-${crypto.randomUUID()}`;
    const error = await rejection(
      http.mutation(runaway.insertThenAllocate, { name }),
      20_000,
    );
    expect(error.message).toMatch(OUT_OF_MEMORY_MESSAGE);
    expect(await http.query(api.counters.get, { name })).toBeNull();
  });

  test("what a stopped run held is freed: the backend's heap does not grow run after run", async () => {
    const http = h.httpClient();
    const heapAfterCollection = () => {
      collectGarbage();
      const stats = v8.getHeapStatistics();
      return stats.used_heap_size + stats.external_memory;
    };
    const before = heapAfterCollection();
    for (const buffers of [false, true, false, true]) {
      const error = await rejection(
        http.query(runaway.allocateBetweenReads, { buffers }),
        20_000,
      );
      expect(error.message).toMatch(OUT_OF_MEMORY_MESSAGE);
    }
    // Each run held 64 MB on the main thread before it was moved. A stopped
    // context is drained once its reads settle, and ArrayBuffers are
    // returned by V8's sweeper after a collection, so this takes a moment.
    await waitFor(
      () => heapAfterCollection() - before < 48 * 2 ** 20,
      "the stopped runs' memory to be freed",
    );
  });

  test("garbage past 64 MB is not held against a run: it returns its result", async () => {
    const http = h.httpClient();
    // 128 MB allocated in all, 0.5 MB of it alive at any time.
    expect(
      await http.query(runaway.churnBetweenReads, { megabytes: 128 }),
    ).toBe(256 * (1 << 16));
  });
});

describe("what a stopped run left unawaited", () => {
  test.each([
    ["a new query (a synchronous syscall)", true],
    ["the next document of a stream (an async syscall)", false],
  ])("ends quietly at its next read: %s", async (_kind, newQuery) => {
    const http = h.httpClient();
    // Two documents, so a stream over them has a next one to read.
    for (const label of ["a", "b"])
      await http.mutation(api.counters.increment, {
        name: `forgotten-${label}-${crypto.randomUUID()}`,
      });
    const unhandled: unknown[] = [];
    const record = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", record);
    try {
      const error = await rejection(
        http.query(runaway.forgetReadsThenSpin, { newQuery }),
        20_000,
      );
      expect(error.message).toMatch(TIMEOUT_MESSAGE);
      // The dropped context's last drain runs once the event loop turns,
      // and Node reports rejections after the microtasks that follow.
      for (let turn = 0; turn < 5; turn++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", record);
    }
  });
});

describe("a long synchronous computation under the limit", () => {
  test("in a query: the right result, its log lines once, and its subscription follows the data", async () => {
    const name = `computed-${crypto.randomUUID()}`;
    const http = h.httpClient();
    await http.mutation(api.counters.increment, { name, by: 5 });
    const logger = recordingClientLogger();
    const client = h.client({ logger });
    const values: unknown[] = [];
    client.onUpdate(
      runaway.computeThenRead,
      { name, iterations: LONG_COMPUTATION },
      (value) => values.push(value),
    );
    await waitFor(() => values.length === 1, "the first result");
    expect(values[0]).toEqual({ value: 5, computed: true });
    const logged = (text: string) =>
      logger.lines.filter((line) => line.includes(text)).length;
    expect(logged("before computing")).toBe(1);
    expect(logged("after computing")).toBe(1);

    await http.mutation(api.counters.increment, { name });
    await waitFor(() => values.length === 2, "the updated result");
    expect(values[1]).toEqual({ value: 6, computed: true });
    expect(logged("before computing")).toBe(2);
  });

  test("its read waiting behind a busy main thread does not count against its second", async () => {
    const name = `queued-read-${crypto.randomUUID()}`;
    const http = h.httpClient();
    await http.mutation(api.counters.increment, { name, by: 3 });
    // A worker booted and idle, so the run below reaches it at once.
    await http.query(runaway.computeThenRead, {
      name,
      iterations: LONG_COMPUTATION,
    });
    const result = http.query(runaway.computeThenRead, {
      name,
      iterations: 1.5 * LONG_COMPUTATION,
    });
    // The backend shares this thread. Once the run is in its worker (~50 ms:
    // its main-thread slice, then the move), hold the thread past the run's
    // whole second; the worker finishes computing meanwhile, and its read
    // waits in the queue. Its own time is ~0.25 s, so it must succeed.
    // Held from the check phase, so the loop's next turn runs its timers
    // before it reads the worker's message, as after any busy callback.
    await new Promise((resolve) => setTimeout(resolve, 120));
    await new Promise((resolve) => setImmediate(resolve));
    const until = performance.now() + 1_200;
    while (performance.now() < until) {
      // the main thread is busy
    }
    expect(await result).toEqual({ value: 3, computed: true });
  });

  test("in a mutation that calls a mutation and a query: committed once, with the right result", async () => {
    const http = h.httpClient();
    const name = `called-${crypto.randomUUID()}`;
    expect(
      await http.mutation(runaway.computeThenCall, {
        name,
        iterations: LONG_COMPUTATION,
      }),
    ).toEqual({ incremented: 1, read: 10 });
    expect(await http.query(api.counters.get, { name })).toBe(10);
    expect(await http.query(api.counters.get, { name: `${name}-nested` })).toBe(
      1,
    );
  });

  test("in a mutation: another client's mutation commits while it computes, and the overlapped run is repeated", async () => {
    const name = `overlapped-${crypto.randomUUID()}`;
    const http = h.httpClient();
    const order: string[] = [];
    // Reads nothing yet written, then computes for several hundred ms.
    const slow = settleOrder(
      order,
      "slow",
      http.mutation(runaway.computeThenIncrement, {
        name,
        iterations: 2 * LONG_COMPUTATION,
      }),
    );
    await headStart();
    const fast = settleOrder(
      order,
      "fast",
      h.httpClient().mutation(api.counters.increment, { name }),
    );
    expect(await withTimeout(fast, "the mutation beside")).toBe(1);
    // Not 1, a lost update: the run that read before the commit was discarded.
    expect(await withTimeout(slow, "the computing mutation", 20_000)).toBe(2);
    expect(order).toEqual(["fast", "slow"]);
    expect(await http.query(api.counters.get, { name })).toBe(2);
  });

  test("a function that returns with a nested call still running leaves its worker usable", async () => {
    const http = h.httpClient();
    const name = `forgotten-${crypto.randomUUID()}`;
    await http.mutation(api.counters.increment, { name });
    for (let i = 0; i < 2; i++) {
      expect(
        await http.mutation(runaway.computeThenForget, {
          name,
          iterations: LONG_COMPUTATION,
        }),
      ).toBe("returned");
    }
    expect(
      await http.query(runaway.computeThenRead, {
        name,
        iterations: LONG_COMPUTATION,
      }),
    ).toEqual({ value: 1, computed: true });
  });
});

describe("a subscription whose result is large", () => {
  test("runs again in a worker once one is ready, with the results it gives on the main thread", async () => {
    const name = `large-${crypto.randomUUID()}`;
    const http = h.httpClient();
    await http.mutation(api.counters.increment, { name });
    const client = h.client();
    type Large = { value: number; runsInThisIsolate: number; padding: string };
    const values: Large[] = [];
    client.onUpdate(runaway.largeRead, { name }, (value: Large) =>
      values.push(value),
    );
    await waitFor(() => values.length === 1, "the first result");
    expect(values[0].value).toBe(1);
    // Each write runs it again. Its first large result marks it; a worker
    // boots when one is first wanted, and a later run goes there (its
    // isolate counts runs from 1).
    let inWorker = 0;
    for (let i = 2; i <= 30 && inWorker === 0; i++) {
      await http.mutation(api.counters.increment, { name });
      await waitFor(() => values.length === i, `result ${i}`);
      const [before, now] = values.slice(-2);
      expect(now.value).toBe(i);
      expect(now.padding).toHaveLength(300_000);
      if (now.runsInThisIsolate <= before.runsInThisIsolate) inWorker = i;
      else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(inWorker).toBeGreaterThan(1);
    await client.close();
  });
});
