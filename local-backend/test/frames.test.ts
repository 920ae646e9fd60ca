/**
 * Oversized calls fail, they do not loop: a mutation or query whose arguments
 * are over Convex's 16 MiB gets Convex's error for that request, over the
 * WebSocket and over HTTP, and the socket stays open, so the client neither
 * reconnects nor re-sends the call.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  api,
  rejection,
  startTestBackend,
  type TestBackend,
  withTimeout,
} from "./helpers.ts";

const OVER_LIMIT = 17 * 1024 * 1024;

let h: TestBackend;
beforeAll(async () => {
  h = await startTestBackend();
});
afterAll(async () => {
  await h.stop();
});

describe("oversized calls", () => {
  test("an oversized mutation fails with Convex's error and the same socket carries on", async () => {
    const client = h.client();
    expect(
      await client.mutation(api.counters.increment, { name: "before" }),
    ).toBe(1);
    const error = await rejection(
      client.mutation(api.messages.send, {
        author: "huge",
        body: "x".repeat(OVER_LIMIT),
      }),
    );
    expect(error.message).toMatch(
      /Arguments for messages:send are too large \(actual: 17(\.\d+)? MiB, limit: 16 MiB\)/,
    );
    // Later calls on the same client are answered (no reconnect loop re-sending the big one).
    expect(
      await withTimeout(
        client.mutation(api.counters.increment, { name: "before" }),
        "a mutation after the oversized one",
      ),
    ).toBe(2);
    expect(client.connectionState().connectionRetries).toBe(0);
    expect(
      await h.httpClient().query(api.messages.byAuthor, { author: "huge" }),
    ).toEqual([]);
  });

  test("an oversized query subscription fails with Convex's error", async () => {
    const client = h.client();
    const failed = new Promise<Error>((resolve) => {
      client.onUpdate(
        api.messages.byAuthor,
        { author: "y".repeat(OVER_LIMIT) },
        () => undefined,
        resolve,
      );
    });
    expect((await withTimeout(failed, "the QueryFailed")).message).toMatch(
      /Arguments for messages:byAuthor are too large/,
    );
    expect(await client.mutation(api.counters.increment, { name: "q" })).toBe(
      1,
    );
    expect(client.connectionState().connectionRetries).toBe(0);
  });

  test("an oversized call over HTTP gets the same error", async () => {
    const error = await rejection(
      h.httpClient().mutation(api.messages.send, {
        author: "huge-http",
        body: "x".repeat(OVER_LIMIT),
      }),
    );
    expect(error.message).toMatch(/Arguments for messages:send are too large/);
  });
});
