/**
 * Components on the local backend, driven by the real clients: the app in
 * `fixture-components/` installs `@convex-dev/rate-limiter` and
 * `@convex-dev/presence` from npm, unmodified, and a local `notes` component
 * (with a nested `tally`) twice under two names.
 */
import { anyApi } from "convex/server";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { rejection, startTestBackend, type TestBackend } from "./helpers.ts";
import { fileURLToPath } from "node:url";

const FUNCTIONS = fileURLToPath(
  new URL("./fixture-components/convex", import.meta.url),
);
// The fixture's API, untyped: `_generated/api.js` holds `anyApi` too.
const api = anyApi;

let harness: TestBackend;
beforeAll(async () => {
  harness = await startTestBackend({ functions: FUNCTIONS });
});
afterAll(async () => {
  await harness.stop();
});

describe("a local component", () => {
  test("has its own table: same name as the app's, no collision", async () => {
    const client = harness.client();
    const appId = (await client.mutation(api.notes.addLocal, {
      text: "app note",
    })) as string;
    const componentId = (await client.mutation(api.notes.addToComponent, {
      text: "component note",
    })) as string;
    expect(componentId).not.toBe(appId);
    const both = (await client.query(api.notes.listBoth, {})) as {
      app: string[];
      notes: string[];
    };
    expect(both.app).toEqual(["app note"]);
    expect(both.notes).toEqual(["component note"]);
    // The component cannot reach the app's document through its ID.
    expect(await client.query(api.notes.componentSees, { id: appId })).toEqual({
      normalized: null,
      doc: null,
    });
  });

  test("two instances of one definition keep separate data and get their own arguments", async () => {
    const client = harness.client();
    await client.mutation(api.notes.addToComponent, {
      text: "kept",
      archive: true,
    });
    const both = (await client.query(api.notes.listBoth, {})) as {
      archive: string[];
      notes: string[];
    };
    expect(both.archive).toEqual(["archive: kept"]);
    expect(both.notes).not.toContain("archive: kept");
  });

  test("a nested component counts the parent's writes", async () => {
    const client = harness.client();
    const before = (await client.query(api.notes.listBoth, {})) as {
      tally: number;
    };
    await client.mutation(api.notes.addToComponent, { text: "one more" });
    const after = (await client.query(api.notes.listBoth, {})) as {
      tally: number;
    };
    expect(after.tally).toBe(before.tally + 1);
  });

  test("a function handle lets the component call back into the app", async () => {
    const client = harness.client();
    const handle = (await client.mutation(api.notes.addThroughHandle, {
      text: "via handle",
    })) as string;
    expect(handle).toMatch(/^function:\/\/[0-9a-z]{31,37}$/);
    const both = (await client.query(api.notes.listBoth, {})) as {
      app: string[];
    };
    expect(both.app).toContain("via handle");
  });

  test("a component's internal function is not exported to the app", async () => {
    const client = harness.client();
    const error = await rejection(client.query(api.notes.callInternal, {}));
    expect(error.message).toContain(
      'Child component "notes" does not export ["lib","secret"]',
    );
    const missing = await rejection(
      client.query(api.notes.callMissingChild, {}),
    );
    expect(missing.message).toContain('Child component "nowhere" not found');
  });

  test("a client cannot call a component's function", async () => {
    const client = harness.client();
    const error = await rejection(client.query(api.lib.whereAmI, {}));
    expect(error.message).toContain(
      "Could not find public function for 'lib:whereAmI'",
    );
  });
});

describe("@convex-dev/rate-limiter from npm", () => {
  test("a fixed window admits its rate, then refuses with retryAfter", async () => {
    const client = harness.client();
    const first: unknown = await client.mutation(api.limits.send, {
      key: "alice",
      name: "send",
    });
    const second: unknown = await client.mutation(api.limits.send, {
      key: "alice",
      name: "send",
    });
    const third = (await client.mutation(api.limits.send, {
      key: "alice",
      name: "send",
    })) as { ok: boolean; retryAfter?: number };
    expect(first).toEqual({ ok: true, retryAfter: undefined });
    expect(second).toEqual({ ok: true, retryAfter: undefined });
    expect(third.ok).toBe(false);
    expect(third.retryAfter).toBeGreaterThan(0);
    expect(third.retryAfter).toBeLessThanOrEqual(60_000);
    // Another key has its own window.
    expect(
      await client.mutation(api.limits.send, { key: "bob", name: "send" }),
    ).toEqual({ ok: true, retryAfter: undefined });
    expect(
      (await client.query(api.limits.check, { key: "alice" })) as {
        ok: boolean;
      },
    ).toMatchObject({ ok: false });
  });

  test("throws: true refuses with a RateLimited ConvexError", async () => {
    const client = harness.client();
    await client.mutation(api.limits.sendOrThrow, { key: "carol" });
    await client.mutation(api.limits.sendOrThrow, { key: "carol" });
    const error = (await rejection(
      client.mutation(api.limits.sendOrThrow, { key: "carol" }),
    )) as Error & { data?: { kind: string; name: string; retryAfter: number } };
    expect(error.data).toMatchObject({ kind: "RateLimited", name: "send" });
    expect(error.data!.retryAfter).toBeGreaterThan(0);
  });
});
