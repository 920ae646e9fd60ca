/**
 * The start-up gate: calls that reach the ports before the first build is
 * installed wait for it, instead of failing with "Could not find public
 * function" (which loses a mutation a client re-sends after a restart).
 */
import fs from "node:fs";
import path from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { afterEach, describe, expect, test } from "vitest";
import WebSocket from "ws";
import { startBackend, type Backend } from "../src/index.ts";
import {
  api,
  copyFixture,
  quietLogger,
  removeDir,
  tempDir,
  waitFor,
  withTimeout,
} from "./helpers.ts";

/** How long start-up is held open with calls in flight. */
const HOLD_MS = 300;

const HTTP_ROUTES = `
import { httpRouter, httpActionGeneric } from "convex/server";
const http = httpRouter();
http.route({
  path: "/hello",
  method: "GET",
  handler: httpActionGeneric(async () => new Response("hello over http")),
});
export default http;
`;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe("start-up gate", () => {
  test("calls that arrive before the functions are loaded wait for them and succeed", async () => {
    const root = tempDir("startup");
    const dataDir = tempDir("startup-data");
    cleanups.push(
      () => removeDir(root),
      () => removeDir(dataDir),
    );
    const functions = copyFixture(root);
    fs.writeFileSync(path.join(functions, "http.ts"), HTTP_ROUTES);

    let early:
      | {
          wsMutation: Promise<number>;
          httpMutation: Promise<number>;
          firstValue: Promise<number | null>;
          site: Promise<{ status: number; body: string }>;
        }
      | undefined;
    const backend: Backend = await startBackend({
      functions,
      data: dataDir,
      port: 0,
      sitePort: 0,
      host: "127.0.0.1",
      watch: false,
      logger: quietLogger(),
      onListening: async ({ url, siteUrl }) => {
        const client = new ConvexClient(url, {
          webSocketConstructor:
            WebSocket as unknown as typeof globalThis.WebSocket,
          logger: false,
          unsavedChangesWarning: false,
        });
        cleanups.push(() => client.close());
        const http = new ConvexHttpClient(url, { logger: false });
        early = {
          firstValue: new Promise((resolve) => {
            const stop = client.onUpdate(
              api.counters.get,
              { name: "early" },
              (value) => {
                if (value !== null) {
                  stop();
                  resolve(value);
                }
              },
            );
          }),
          wsMutation: client.mutation(api.counters.increment, {
            name: "early",
          }),
          httpMutation: http.mutation(api.counters.increment, {
            name: "early",
          }),
          site: fetch(`${siteUrl}/hello`).then(async (response) => ({
            status: response.status,
            body: await response.text(),
          })),
        };
        // Let the calls reach the backend while it still has no functions.
        await sleep(HOLD_MS);
      },
    });
    cleanups.push(() => backend.close());

    const calls = early!;
    const results = await withTimeout(
      Promise.all([calls.wsMutation, calls.httpMutation]),
      "the early mutations",
    );
    expect(results.sort()).toEqual([1, 2]);
    expect(await withTimeout(calls.firstValue, "the early query")).toEqual(
      expect.any(Number),
    );
    expect(await withTimeout(calls.site, "the early HTTP action")).toEqual({
      status: 200,
      body: "hello over http",
    });
  });

  test("a call waiting for the first build fails when start-up fails, and no port stays open", async () => {
    const root = tempDir("startup-broken");
    const dataDir = tempDir("startup-broken-data");
    cleanups.push(
      () => removeDir(root),
      () => removeDir(dataDir),
    );
    const functions = copyFixture(root);
    fs.writeFileSync(
      path.join(functions, "broken.ts"),
      [
        'import { v } from "convex/values";',
        "export const unused = v.string();",
        "function explode(): never {",
        '  throw new Error("broken at load time");',
        "}",
        "explode();",
        "",
      ].join("\n"),
    );
    let pending: Promise<unknown> | undefined;
    let deploymentUrl = "";
    const started = startBackend({
      functions,
      data: dataDir,
      port: 0,
      sitePort: null,
      host: "127.0.0.1",
      watch: false,
      logger: quietLogger(),
      onListening: async ({ url }) => {
        deploymentUrl = url;
        pending = new ConvexHttpClient(url, { logger: false })
          .mutation(api.counters.increment, { name: "never" })
          .then(
            () => "resolved",
            (error: Error) => error.message,
          );
        await sleep(HOLD_MS);
      },
    });
    await expect(started).rejects.toThrow(/broken at load time/);
    expect(await withTimeout(pending!, "the waiting call to settle")).not.toBe(
      "resolved",
    );
    await waitFor(
      () =>
        fetch(`${deploymentUrl}/instance_name`).then(
          () => false,
          () => true,
        ),
      "the port to close",
    );
  });
});
