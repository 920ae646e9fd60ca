/**
 * Deployment environment variables: Convex's rules and error texts
 * (convex-backend `environment_variables.rs`), persistence in the data folder,
 * `process.env` in every kind of function, and changes made with the CLI
 * reaching a running backend without a restart.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import WebSocket from "ws";
import { afterEach, describe, expect, test } from "vitest";
import { runCommand } from "../src/commands.ts";
import { type Backend, startBackend } from "../src/index.ts";
import { EnvironmentStore, parseEnvFile } from "../src/storage/environment.ts";
import {
  quietLogger,
  rejection,
  removeDir,
  REPO_ROOT,
  tempDir,
  waitFor,
} from "./helpers.ts";

const FUNCTIONS = fileURLToPath(new URL("./identity/convex", import.meta.url));
const api = anyApi;
const dirs: string[] = [];
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
  for (const dir of dirs.splice(0)) removeDir(dir);
});

function freshDir(): string {
  const dir = tempDir("env");
  dirs.push(dir);
  return dir;
}

async function start(
  data: string,
  env?: Record<string, string>,
): Promise<Backend> {
  const backend = await startBackend({
    functions: FUNCTIONS,
    data,
    port: 0,
    sitePort: 0,
    watch: false,
    logger: quietLogger(),
    env: {
      OIDC_ISSUER: "https://unused.example.com",
      CUSTOM_JWKS: "data:,{}",
      ...env,
    },
  });
  cleanups.push(() => backend.close());
  return backend;
}

describe("the environment store", () => {
  test("refuses what Convex refuses, with Convex's messages", () => {
    const store = new EnvironmentStore(freshDir());
    const refusal = (fn: () => void) => {
      try {
        fn();
      } catch (error) {
        return {
          code: (error as { code: string }).code,
          message: (error as Error).message,
        };
      }
      throw new Error("expected a refusal");
    };
    expect(refusal(() => store.set("1BAD", "x"))).toEqual({
      code: "EnvironmentVariableNameInvalid",
      message:
        "The environment variable name 1BAD is invalid. Environment variable names must begin with a letter and may only include characters a-z, A-Z, 0-9, and underscores.",
    });
    expect(refusal(() => store.set("bad-name", "x")).code).toBe(
      "EnvironmentVariableNameInvalid",
    );
    expect(refusal(() => store.set("A".repeat(41), "x"))).toEqual({
      code: "EnvironmentVariableNameTooLong",
      message: `The environment variable name ${"A".repeat(41)} is too long. Environment variable names must be less than 40.`,
    });
    expect(refusal(() => store.set("BIG", "é".repeat(4097)))).toEqual({
      code: "EnvironmentVariableValueTooLarge",
      message:
        "The environment variable value is 8194 bytes, which is too large. (max size: 8192",
    });
    expect(refusal(() => store.set("CONVEX_SITE_URL", "x"))).toEqual({
      code: "EnvVarNameForbidden",
      message:
        'Environment variable with name "CONVEX_SITE_URL" is built-in and cannot be overridden',
    });
    store.set("_leading_underscore_ok", "x".repeat(8192));
    const hundred = Object.fromEntries(
      Array.from({ length: 99 }, (_, i) => [`V${i}`, "v"]),
    );
    store.update(hundred);
    expect(refusal(() => store.set("ONE_TOO_MANY", "v"))).toEqual({
      code: "EnvVarLimitMet",
      message: "The environment variable limit (100) has been met.",
    });
    expect(Object.keys(store.list())).toHaveLength(100);
  });

  test("set, get, list and remove persist in the data folder, owner-readable only", () => {
    const dir = freshDir();
    const out: string[] = [];
    const err: string[] = [];
    const io = {
      out: (l: string) => out.push(l),
      err: (l: string) => err.push(l),
    };
    expect(
      runCommand(["env", "set", "API_KEY", "s3cret value"], { data: dir }, io),
    ).toBe(0);
    expect(runCommand(["env", "set", "MODE=dev"], { data: dir }, io)).toBe(0);
    expect(runCommand(["env", "get", "API_KEY"], { data: dir }, io)).toBe(0);
    expect(runCommand(["env", "list"], { data: dir }, io)).toBe(0);
    expect(out).toEqual(["s3cret value", 'API_KEY="s3cret value"', "MODE=dev"]);
    expect(new EnvironmentStore(dir).list()).toEqual({
      API_KEY: "s3cret value",
      MODE: "dev",
    });
    expect(fs.statSync(path.join(dir, "env.json")).mode & 0o077).toBe(0);
    expect(runCommand(["env", "remove", "API_KEY"], { data: dir }, io)).toBe(0);
    expect(runCommand(["env", "get", "API_KEY"], { data: dir }, io)).toBe(1);
    expect(err).toContain('✖ Environment variable "API_KEY" not found');
    expect(new EnvironmentStore(dir).list()).toEqual({ MODE: "dev" });
    expect(fs.readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  test("an env file reads NAME=value lines, comments, export and quotes", () => {
    expect(
      parseEnvFile(
        '# comment\nexport A=1\nB="two words"\nC=\'single\'\nD=x # trailing\nE="line\\nbreak"\n',
      ),
    ).toEqual({
      A: "1",
      B: "two words",
      C: "single",
      D: "x",
      E: "line\nbreak",
    });
  });
});

describe("process.env in functions", () => {
  test("queries, mutations, actions and module top level see the variables and the built-in URLs", async () => {
    const backend = await start(freshDir(), { GREETING: "hi" });
    const http = new ConvexHttpClient(backend.url, { logger: false });
    expect(await http.query(api.env.inQuery, { name: "GREETING" })).toBe("hi");
    expect(await http.mutation(api.env.inMutation, { name: "GREETING" })).toBe(
      "hi",
    );
    expect(await http.action(api.env.inAction, { name: "GREETING" })).toBe(
      "hi",
    );
    expect(await http.query(api.env.atModuleLoad, {})).toBe("hi");
    expect(
      await http.query(api.env.inQuery, { name: "CONVEX_CLOUD_URL" }),
    ).toBe(backend.url);
    expect(
      await http.action(api.env.inAction, { name: "CONVEX_SITE_URL" }),
    ).toBe(backend.siteUrl);
  });

  test("a change from the CLI reaches a running backend's subscriptions without a restart, and survives one", async () => {
    const data = freshDir();
    const backend = await start(data, { GREETING: "hi" });
    const client = new ConvexClient(backend.url, {
      webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
      logger: false,
      unsavedChangesWarning: false,
    });
    cleanups.unshift(() => client.close());
    const seen: unknown[] = [];
    client.onUpdate(api.env.inQuery, { name: "GREETING" }, (v: unknown) =>
      seen.push(v),
    );
    await waitFor(() => seen.includes("hi"), "the first value");

    // The real command line, as a user types it, in another process.
    await promisify(execFile)(
      "npx",
      [
        "tsx",
        "local-backend/src/cli.ts",
        "env",
        "set",
        "GREETING",
        "hello",
        "--data",
        data,
      ],
      { cwd: REPO_ROOT, timeout: 60_000 },
    );
    await waitFor(() => seen.includes("hello"), "the new value, pushed");
    const http = new ConvexHttpClient(backend.url, { logger: false });
    expect(await http.query(api.env.atModuleLoad, {})).toBe("hello");

    runCommand(
      ["env", "remove", "GREETING"],
      { data },
      { out: () => undefined, err: () => undefined },
    );
    await waitFor(() => seen.at(-1) === null, "the removal, pushed");

    runCommand(
      ["env", "set", "GREETING", "persisted"],
      { data },
      { out: () => undefined, err: () => undefined },
    );
    await waitFor(() => seen.at(-1) === "persisted", "the last value");
    await client.close();
    await backend.close();
    const again = await start(data);
    expect(
      await new ConvexHttpClient(again.url, { logger: false }).query(
        api.env.inQuery,
        { name: "GREETING" },
      ),
    ).toBe("persisted");
  });

  test("startBackend refuses a bad variable with Convex's message", async () => {
    const refused = await rejection(start(freshDir(), { "not-valid": "x" }));
    expect(refused.message).toBe(
      "EnvironmentVariableNameInvalid: The environment variable name not-valid is invalid. Environment variable names must begin with a letter and may only include characters a-z, A-Z, 0-9, and underscores.",
    );
  });
});
