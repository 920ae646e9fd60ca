/**
 * Execution time limits: a query or mutation that runs past Convex's 1 s, in a
 * synchronous loop, an endless chain of syscalls or a nested call, is stopped
 * with Convex's error; its writes are dropped; the process carries on, and a
 * client waiting behind it is served. While an async loop or a long scan runs,
 * other clients' queries and mutations are answered before it stops.
 */
import { anyApi } from "convex/server";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  api,
  rejection,
  startTestBackend,
  type TestBackend,
  withTimeout,
} from "./helpers.ts";

/** convex-backend `crates/isolate/src/termination.rs` `UserTimeoutError`, knob DATABASE_UDF_USER_TIMEOUT. */
const TIMEOUT_ERROR = "Function execution timed out (maximum duration: 1s)";
const runaway = anyApi.runaway;

let h: TestBackend;
beforeAll(async () => {
  h = await startTestBackend();
});
afterAll(async () => {
  await h.stop();
});

describe("runaway functions", () => {
  test("a synchronous loop in a query is stopped, and a client waiting behind it is served", async () => {
    const http = h.httpClient();
    const loads = (await http.query(runaway.moduleLoads, {})) as number;
    const stuck = rejection(h.client().query(runaway.syncLoop, {}));
    const behind = http.query(api.greeting.default, {});
    const error = await stuck;
    expect(error.message).toContain(TIMEOUT_ERROR);
    expect(await withTimeout(behind, "the query queued behind")).toBe(
      "hello from the default export",
    );
    // The terminated context was replaced by a fresh evaluation of the bundle.
    expect(await http.query(runaway.moduleLoads, {})).toBe(loads);
  });

  test(
    "an async loop over syscalls is stopped with the same error",
    { timeout: 60_000 },
    async () => {
      const error = await rejection(
        h.httpClient().query(runaway.asyncLoop, {}),
        60_000,
      );
      expect(error.message).toContain(TIMEOUT_ERROR);
    },
  );

  test.each([
    ["a synchronous loop", false],
    ["an async loop", true],
  ])(
    "a mutation stopped in %s commits nothing",
    // Only user time counts (syscalls do not, as in Convex), so a loop that
    // mostly waits on the database takes several seconds to use its second.
    { timeout: 60_000 },
    async (_what, async) => {
      const http = h.httpClient();
      const name = `spin-${String(async)}`;
      const error = await rejection(
        http.mutation(runaway.writeThenSpin, { name, async }),
        60_000,
      );
      expect(error.message).toContain(TIMEOUT_ERROR);
      expect(await http.query(api.counters.get, { name })).toBeNull();
      expect(await http.mutation(api.counters.increment, { name })).toBe(1);
    },
  );

  test("a nested query that spins times out its calling mutation, which commits nothing", async () => {
    const http = h.httpClient();
    const error = await rejection(
      http.mutation(runaway.nestedSpin, { name: "nested-spin" }),
    );
    expect(error.message).toContain(TIMEOUT_ERROR);
    expect(
      await http.query(api.counters.get, { name: "nested-spin" }),
    ).toBeNull();
  });

  test.each([
    ["an async loop over syscalls", () => runaway.asyncLoop, {}],
    [
      "a scan past the documents-read limit",
      () => anyApi.limits.read,
      { author: "scanned", n: 40_000 },
    ],
  ] as const)(
    "while %s runs, another client's query and mutation are served",
    { timeout: 120_000 },
    async (_what, fn, args) => {
      const http = h.httpClient();
      if ("author" in args) {
        for (let i = 0; i < 4; i++) {
          await http.mutation(anyApi.limits.fill, {
            author: args.author,
            count: 8_001,
            size: 1,
          });
        }
      }
      let stopped = false;
      const stuck = rejection(h.httpClient().query(fn(), args), 120_000).then(
        (error) => {
          stopped = true;
          return error;
        },
      );
      // Lets the runaway's request reach the backend before the other
      // client's (sent later, they could only make the test pass vacuously).
      await new Promise((resolve) => setTimeout(resolve, 50));
      const other = h.httpClient();
      const name = `served-${crypto.randomUUID()}`;
      expect(await other.mutation(api.counters.increment, { name })).toBe(1);
      expect(await other.query(api.counters.get, { name })).toBe(1);
      expect(stopped).toBe(false);
      expect((await stuck).message).toMatch(
        /Function execution timed out|Too many documents read/,
      );
    },
  );

  test("a query that computes for well under its second succeeds", async () => {
    expect(
      await h.httpClient().query(runaway.busy, { iterations: 20_000_000 }),
    ).toBe(true);
  });

  test("an action may run past a query's limit", async () => {
    expect(await h.httpClient().action(runaway.slowAction, { ms: 1_500 })).toBe(
      "done",
    );
  });

  test("a subscription to a runaway query gets the error and the socket stays usable", async () => {
    const client = h.client();
    const failed = new Promise<Error>((resolve) => {
      client.onUpdate(runaway.syncLoop, {}, () => undefined, resolve);
    });
    expect((await withTimeout(failed, "the QueryFailed")).message).toContain(
      TIMEOUT_ERROR,
    );
    expect(
      await client.mutation(api.counters.increment, { name: "after" }),
    ).toBe(1);
  });
});
