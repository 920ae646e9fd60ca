/**
 * Execution time limits: a query or mutation that runs past Convex's 1 s, in a
 * synchronous loop, an endless chain of syscalls or a nested call, is stopped
 * with Convex's error; its writes are dropped; the process carries on, and a
 * client waiting behind it is served.
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

  test("an async loop over syscalls is stopped with the same error", async () => {
    const error = await rejection(h.httpClient().query(runaway.asyncLoop, {}));
    expect(error.message).toContain(TIMEOUT_ERROR);
  });

  test.each([
    ["a synchronous loop", false],
    ["an async loop", true],
  ])("a mutation stopped in %s commits nothing", async (_what, async) => {
    const http = h.httpClient();
    const name = `spin-${String(async)}`;
    const error = await rejection(
      http.mutation(runaway.writeThenSpin, { name, async }),
    );
    expect(error.message).toContain(TIMEOUT_ERROR);
    expect(await http.query(api.counters.get, { name })).toBeNull();
    expect(await http.mutation(api.counters.increment, { name })).toBe(1);
  });

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
