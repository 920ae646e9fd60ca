/**
 * Shared by the backend's integration suites: a backend on port 0 with a fresh
 * data directory, real clients, a raw protocol client for the cases the real
 * client never produces, raw HTTP, bounded waits, and the fixture's typed API.
 *
 * Usage:
 *   const harness = await startTestBackend();
 *   const client = harness.client();
 *   const raw = await RawSyncClient.open(harness.backend.url);
 *   await harness.stop(); // closes clients and sockets, stops the backend, removes the data
 */
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import {
  anyApi,
  type ApiFromModules,
  type FilterApi,
  type FunctionReference,
  type FunctionType,
} from "convex/server";
import WebSocket from "ws";
import {
  type Backend,
  type BackendOptions,
  startBackend,
} from "../src/index.ts";
import type { ServerMessage } from "../src/sync/protocol.ts";
import type * as actions from "./fixture/convex/actions.ts";
import type * as counters from "./fixture/convex/counters.ts";
import type * as nested from "./fixture/convex/dir/nested.ts";
import type * as greeting from "./fixture/convex/greeting.ts";
import type * as items from "./fixture/convex/items.ts";
import type * as kinds from "./fixture/convex/kinds.ts";
import type * as messages from "./fixture/convex/messages.ts";
import type * as runtime from "./fixture/convex/runtime.ts";
import type * as scheduled from "./fixture/convex/scheduled.ts";

export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const FIXTURE_DIR = fileURLToPath(
  new URL("./fixture/convex", import.meta.url),
);
export const CLIENT_VERSION = "1.48.0";
export const ZERO_TS = "AAAAAAAAAAA=";
const DEFAULT_WAIT_MS = 10_000;

type FullApi = ApiFromModules<{
  actions: typeof actions;
  counters: typeof counters;
  "dir/nested": typeof nested;
  greeting: typeof greeting;
  items: typeof items;
  kinds: typeof kinds;
  messages: typeof messages;
  runtime: typeof runtime;
  scheduled: typeof scheduled;
}>;

/** `api.messages.send` and friends, as `_generated/api.js` would export them. */
export const api = anyApi as unknown as FilterApi<
  FullApi,
  FunctionReference<FunctionType, "public">
>;

// ---- waiting -----------------------------------------------------------------

type Pending = false | undefined | null;

/**
 * Polls `predicate` (sync or async) until it returns a value other than
 * false/undefined/null, and returns that value; fails after `timeoutMs`.
 */
export async function waitFor<T>(
  predicate: () => T | Pending | Promise<T | Pending>,
  what: string,
  timeoutMs = DEFAULT_WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value !== false && value !== undefined && value !== null) return value;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(10);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects with a clear message when `promise` takes longer than `timeoutMs`. */
export async function withTimeout<T>(
  promise: Promise<T>,
  what: string,
  timeoutMs = DEFAULT_WAIT_MS,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${timeoutMs} ms: ${what}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The error `promise` rejects with; fails if it resolves or takes longer than `timeoutMs`. */
export async function rejection(
  promise: Promise<unknown>,
  timeoutMs = DEFAULT_WAIT_MS,
): Promise<Error> {
  return await withTimeout(
    promise.then(
      (value) => {
        throw new Error(
          `expected a rejection, got ${JSON.stringify(value, bigintReplacer)}`,
        );
      },
      (error: unknown) => error as Error,
    ),
    "the call to settle",
    timeoutMs,
  );
}

function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? `${value}n` : value;
}

// ---- temp dirs -----------------------------------------------------------------

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `local-backend-${prefix}-`));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * A writable copy of the fixture in `<root>/convex`, next to a `node_modules`
 * link so that its `convex/server` imports resolve. Returns the functions dir.
 */
export function copyFixture(root: string): string {
  const functionsDir = path.join(root, "convex");
  fs.cpSync(FIXTURE_DIR, functionsDir, { recursive: true });
  fs.symlinkSync(
    path.join(REPO_ROOT, "node_modules"),
    path.join(root, "node_modules"),
    "dir",
  );
  return functionsDir;
}

// ---- backend + clients ---------------------------------------------------------

export type LogSink = { lines: string[]; errors: string[] };

export function quietLogger(): LogSink & NonNullable<BackendOptions["logger"]> {
  const lines: string[] = [];
  const errors: string[] = [];
  return {
    lines,
    errors,
    info: (line) => lines.push(line),
    error: (line) => errors.push(line),
  };
}

/** A `convex/browser` logger that records what the client would print. */
export function recordingClientLogger(): {
  lines: string[];
  logVerbose(...args: unknown[]): void;
  log(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
} {
  const lines: string[] = [];
  const record = (args: unknown[]) =>
    lines.push(
      args
        .filter((a) => !(typeof a === "string" && a.startsWith("color:")))
        .map((a) => (typeof a === "string" ? a.replace(/^%c/, "") : String(a)))
        .join(" "),
    );
  return {
    lines,
    logVerbose: () => undefined,
    log: (...args) => record(args),
    warn: (...args) => record(args),
    error: (...args) => record(args),
  };
}

export type TestBackend = {
  backend: Backend;
  url: string;
  dataDir: string;
  logs: LogSink;
  /** A `ConvexClient` over `ws`, closed by `stop()`. */
  client(options?: {
    logger?: ReturnType<typeof recordingClientLogger>;
  }): ConvexClient;
  httpClient(): ConvexHttpClient;
  /** A raw protocol socket, closed by `stop()`. */
  raw(pathname?: string): Promise<RawSyncClient>;
  /** Stops the backend only (the data dir stays); for restarts. */
  closeBackend(): Promise<void>;
  /** Starts a new backend on the same data dir (after `closeBackend`), on the same port if asked. */
  restart(options?: { samePort?: boolean }): Promise<void>;
  stop(): Promise<void>;
};

export async function startTestBackend(
  options: {
    functions?: string;
    watch?: boolean;
    dataDir?: string;
    clock?: BackendOptions["clock"];
    nodeActions?: BackendOptions["nodeActions"];
  } = {},
): Promise<TestBackend> {
  const dataDir = options.dataDir ?? tempDir("data");
  const logs = quietLogger();
  const start = (port = 0) =>
    startBackend({
      functions: options.functions ?? FIXTURE_DIR,
      data: dataDir,
      port,
      sitePort: null,
      host: "127.0.0.1",
      watch: options.watch ?? false,
      logger: logs,
      clock: options.clock,
      nodeActions: options.nodeActions,
    });
  const clients: ConvexClient[] = [];
  const raws: RawSyncClient[] = [];
  const harness: TestBackend = {
    backend: await start(),
    get url() {
      return harness.backend.url;
    },
    dataDir,
    logs,
    client(clientOptions = {}) {
      const client = new ConvexClient(harness.url, {
        webSocketConstructor:
          WebSocket as unknown as typeof globalThis.WebSocket,
        logger: clientOptions.logger ?? false,
        unsavedChangesWarning: false,
      });
      clients.push(client);
      return client;
    },
    httpClient() {
      return new ConvexHttpClient(harness.url, { logger: false });
    },
    async raw(pathname) {
      const raw = await RawSyncClient.open(harness.url, pathname);
      raws.push(raw);
      return raw;
    },
    closeBackend() {
      return harness.backend.close();
    },
    async restart(restartOptions = {}) {
      harness.backend = await start(
        restartOptions.samePort === true ? harness.backend.port : 0,
      );
    },
    async stop() {
      for (const raw of raws.splice(0)) raw.terminate();
      await Promise.all(clients.splice(0).map((c) => c.close()));
      await harness.backend.close();
      if (options.dataDir === undefined) removeDir(dataDir);
    },
  };
  return harness;
}

export function syncUrl(
  deploymentUrl: string,
  pathname = `/api/${CLIENT_VERSION}/sync`,
): string {
  return deploymentUrl.replace(/^http/, "ws") + pathname;
}

// ---- the raw protocol client -----------------------------------------------------

type Closed = { code: number; reason: string };

/**
 * A WebSocket speaking the sync protocol by hand: it records every server
 * message, so a test can wait for one and inspect the whole sequence.
 */
export class RawSyncClient {
  readonly messages: ServerMessage[] = [];
  readonly socket: WebSocket;
  readonly closed: Promise<Closed>;
  #closedWith: Closed | null = null;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.on("message", (data: WebSocket.RawData) => {
      this.messages.push(JSON.parse(rawDataToString(data)) as ServerMessage);
    });
    this.closed = new Promise((resolve) => {
      socket.on("close", (code, reason) => {
        this.#closedWith = { code, reason: reason.toString("utf8") };
        resolve(this.#closedWith);
      });
    });
    socket.on("error", () => undefined);
  }

  static async open(
    deploymentUrl: string,
    pathname?: string,
  ): Promise<RawSyncClient> {
    const socket = new WebSocket(syncUrl(deploymentUrl, pathname));
    const client = new RawSyncClient(socket);
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once("open", () => resolve());
        socket.once("error", reject);
        socket.once("unexpected-response", (_req, res) =>
          reject(new Error(`upgrade refused with ${res.statusCode}`)),
        );
      }),
      "the sync socket to open",
    );
    return client;
  }

  get isClosed(): boolean {
    return this.#closedWith !== null;
  }

  /** Sends one message; resolves once it is handed to the kernel. */
  send(message: unknown): Promise<void> {
    return this.sendRaw(JSON.stringify(message));
  }

  sendRaw(data: string | Buffer, options: { binary?: boolean } = {}) {
    return new Promise<void>((resolve, reject) => {
      this.socket.send(data, { binary: options.binary ?? false }, (error) =>
        error ? reject(error) : resolve(),
      );
    });
  }

  connect(sessionId: string, extra: Record<string, unknown> = {}) {
    return this.send({
      type: "Connect",
      sessionId,
      connectionCount: 0,
      lastCloseReason: "InitialConnect",
      clientTs: Date.now(),
      ...extra,
    });
  }

  /** The first message (received so far or later) that `predicate` accepts. */
  async next<T extends ServerMessage>(
    predicate: (message: ServerMessage) => message is T,
    what: string,
    timeoutMs = DEFAULT_WAIT_MS,
  ): Promise<T> {
    return await waitFor(() => this.messages.find(predicate), what, timeoutMs);
  }

  mutationResponse(requestId: number): Promise<MutationResponse> {
    return this.next(
      (m): m is MutationResponse =>
        m.type === "MutationResponse" && m.requestId === requestId,
      `MutationResponse ${requestId}`,
    );
  }

  transitions(): Transition[] {
    return this.messages.filter(
      (m): m is Transition => m.type === "Transition",
    );
  }

  /** Drops the TCP connection without a closing handshake. */
  terminate(): void {
    this.socket.terminate();
  }
}

export type Transition = Extract<ServerMessage, { type: "Transition" }>;
export type MutationResponse = Extract<
  ServerMessage,
  { type: "MutationResponse" }
>;

function rawDataToString(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString("utf8");
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data).toString("utf8");
}

// ---- raw HTTP ----------------------------------------------------------------------

export type RawResponse = {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
};

/** One HTTP request with full control of the headers (fetch forbids setting `Host`). */
export function rawHttp(
  deploymentUrl: string,
  request: {
    method: string;
    path: string;
    headers?: Record<string, string>;
    body?: string;
  },
): Promise<RawResponse> {
  const url = new URL(deploymentUrl);
  return withTimeout(
    new Promise<RawResponse>((resolve, reject) => {
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          method: request.method,
          path: request.path,
          headers: request.headers,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks).toString("utf8"),
            }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(request.body);
    }),
    `${request.method} ${request.path}`,
  );
}

/** POST /api/<kind> as `ConvexHttpClient` sends it, returning the raw status and JSON body. */
export async function postFunction(
  deploymentUrl: string,
  kind: "query" | "mutation" | "action",
  udfPath: string,
  args: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await rawHttp(deploymentUrl, {
    method: "POST",
    path: `/api/${kind}`,
    headers: {
      "Content-Type": "application/json",
      "Convex-Client": `npm-${CLIENT_VERSION}`,
    },
    body: JSON.stringify({
      path: udfPath,
      format: "convex_encoded_json",
      args: [args],
    }),
  });
  return {
    status: response.status,
    body: JSON.parse(response.body) as Record<string, unknown>,
  };
}
