/**
 * Convex's error text and console formats through the real clients, and
 * HTTP actions that carry bytes both ways (fixture `test/fixture-http`).
 */
import { randomBytes, createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type Backend, startBackend } from "../src/index.ts";
import {
  postFunction,
  quietLogger,
  rejection,
  removeDir,
  tempDir,
} from "./helpers.ts";

const FUNCTIONS = fileURLToPath(
  new URL("./fixture-http/convex", import.meta.url),
);
const REQUEST_ID = /^\[Request ID: [0-9a-f]+\] Server Error\n/;

let backend: Backend;
let data: string;
let http: ConvexHttpClient;

beforeAll(async () => {
  data = tempDir("errors");
  backend = await startBackend({
    functions: FUNCTIONS,
    data,
    port: 0,
    sitePort: 0,
    watch: false,
    logger: quietLogger(),
  });
  http = new ConvexHttpClient(backend.url, { logger: false });
});

afterAll(async () => {
  await backend.close();
  removeDir(data);
});

const ref = <T extends "query" | "mutation" | "action">(
  _kind: T,
  name: string,
) => makeFunctionReference<T, Record<string, never>>(name);

describe("error text", () => {
  test("an uncaught error reads as Convex prints it: request id, message, mapped frames, final newline", async () => {
    const error = await rejection(
      http.mutation(ref("mutation", "failures:crash"), {}),
    );
    expect(error.message).toMatch(REQUEST_ID);
    expect(error.message.replace(REQUEST_ID, "")).toMatch(
      /^Uncaught Error: kaboom\n {4}at handler \(\.\.\/convex\/failures\.ts:\d+:\d+\)\n$/,
    );
  });

  test("a ConvexError subclass is named by its own name and keeps its data", async () => {
    const { body } = await postFunction(
      backend.url,
      "mutation",
      "failures:subclass",
      {},
    );
    expect(body.errorMessage).toMatch(REQUEST_ID);
    expect(String(body.errorMessage).replace(REQUEST_ID, "")).toMatch(
      /^Uncaught NotAllowed: \{"code":"NOPE"\}\n {4}at /,
    );
    expect(body.errorData).toEqual({ code: "NOPE" });
  });

  test("a failure inside ctx.runMutation reaches the action without the inner request id", async () => {
    const error = await rejection(
      http.action(ref("action", "failures:nested"), {}),
    );
    const text = error.message.replace(REQUEST_ID, "");
    expect(text).not.toContain("Request ID");
    expect(text).toMatch(
      /^Uncaught Error: Uncaught Error: kaboom\n {4}at handler \(\.\.\/convex\/failures\.ts:\d+:\d+\)\n/,
    );
    expect(text).toMatch(
      /at async handler \(\.\.\/convex\/failures\.ts:\d+:\d+\)\n$/,
    );
  });

  test("an unknown function gets Convex's not-found text", async () => {
    const error = await rejection(
      http.query(ref("query", "failures:nope"), {}),
    );
    expect(error.message.replace(REQUEST_ID, "")).toBe(
      "Could not find public function for 'failures:nope'. Did you forget to run `npx convex dev`?\n",
    );
  });
});

describe("console", () => {
  test("arguments are inspected as Convex's runtime does, and timers report in ms", async () => {
    const { body } = await postFunction(
      backend.url,
      "query",
      "failures:consoleForms",
      {},
    );
    const lines = body.logLines as string[];
    expect(lines[0]).toBe("[LOG] 'text' 1 -0 2n null undefined true");
    expect(lines[1]).toBe(
      "[INFO] {\n  a: [ 1, 'two' ],\n  'b-c': {\n    d: null\n  }\n}",
    );
    expect(lines[2]).toBe("[WARN] [ 'x', 'y' ]");
    expect(lines[3]).toMatch(/^\[INFO\] t: \d+ms 'extra'$/);
    expect(lines[4]).toMatch(/^\[INFO\] t: \d+ms$/);
    expect(lines.slice(5)).toEqual([
      "[WARN] Timer 't' does not exist",
      "[WARN] Timer 'default' already exists",
    ]);
  });
});

describe("HTTP actions", () => {
  test("request and response bodies are byte for byte, whatever the bytes", async () => {
    for (const size of [0, 1, 4096, 300_000]) {
      const bytes = randomBytes(size);
      const response = await fetch(`${backend.siteUrl}/echo`, {
        method: "POST",
        body: bytes,
        headers: { "Content-Type": "image/png" },
      });
      expect(response.status).toBe(200);
      expect(response.headers.get("X-Byte-Length")).toBe(String(size));
      expect(response.headers.get("X-Sha256")).toBe(
        createHash("sha256").update(bytes).digest("hex"),
      );
      expect(Buffer.from(await response.arrayBuffer()).equals(bytes)).toBe(
        true,
      );
    }
  });

  test("a failing handler answers 500 with Convex's JSON body", async () => {
    const response = await fetch(`${backend.siteUrl}/fail`);
    expect(response.status).toBe(500);
    expect(response.headers.get("Content-Type")).toContain("application/json");
    const body = (await response.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["code", "trace"]);
    expect(body.code).toMatch(
      /^\[Request ID: [0-9a-f]+\] Server Error: Uncaught Error: the handler failed$/,
    );
    expect(body.trace).toMatch(
      /^Uncaught Error: the handler failed\n {4}at .*\.\.\/convex\/http\.ts:\d+:\d+\)?\n$/,
    );

    const convexError = await fetch(`${backend.siteUrl}/convexError`);
    expect(convexError.status).toBe(500);
    const convexBody = (await convexError.json()) as {
      code: string;
      data: unknown;
    };
    expect(convexBody.code).toMatch(/Server Error: Uncaught ConvexError: /);
    expect(convexBody.data).toEqual({ code: "NOT_ALLOWED" });
  });
});
