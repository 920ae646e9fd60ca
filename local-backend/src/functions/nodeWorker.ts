/**
 * The entry of a Node-runtime worker thread (`"use node"` actions): imports
 * the app's Node bundle with Node's built-ins and globals available, and runs
 * one action at a time for the main thread (`nodeRuntime.ts`).
 *
 * What an action sees follows Convex's Node executor (convex-backend
 * `npm-packages/node-executor/src/executor.ts`):
 * - `process.env`: the few host variables it allows (`PATH`, `LANG`, ...) and
 *   the deployment's variables of the call; the bundle is imported again when
 *   they change, since module top level may read them (`?envHash=`);
 * - `require`, `__dirname`, `__filename` for code that esbuild left as CommonJS
 *   (`setupGlobals`), resolving from the functions folder;
 * - `globalThis.Convex`: the syscalls, each a message to the main thread,
 *   answered there by the same handlers the isolate uses;
 * - `console`: lines sent to the main thread, formatted as in the isolate.
 *
 * Protocol (every message is structured-cloned; values are JSON strings):
 *   main -> worker: `analyze`, `invoke`, `syscallResult`
 *   worker -> main: `ready` | `loadFailed` once, then `analysis`, `log`,
 *                   `syscall`, `done`
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import { consoleTimer, formatLogArgs, type LogLevel } from "./consoleFormat.ts";
import {
  syscallError,
  type ThrownParts,
  thrownParts,
  type WireSyscallError,
} from "./errors.ts";

/** What the main thread gives a worker at start. */
export type NodeWorkerData = {
  /** `file://` URL of the bundle (an ES module exporting `definitions`). */
  bundleUrl: string;
  /** A file inside the functions folder: bare `require`s resolve from there. */
  requireFrom: string;
  /** The deployment's variables at start, for the first import. */
  env: Record<string, string>;
  /** An action's limit, after which its call fails (the main thread kills a worker that hangs longer). */
  timeoutMs: number;
};

/** A function as Convex's Node analysis reports it (`analyzeModule`). */
export type AnalyzedNodeFunction = {
  name: string;
  udfType: "action" | "mutation" | "query" | "httpAction";
  visibility: "public" | "internal" | null;
  args: string | null;
  returns: string | null;
};

/** Definition path -> module name -> its functions. */
export type NodeAnalysis = Record<
  string,
  Record<string, AnalyzedNodeFunction[]>
>;

/** A thrown value, as it crosses to the main thread. */
export type WireError = ThrownParts & {
  /** Not thrown by the action's code: shown as the message alone (no "Uncaught", no frames). */
  system?: boolean;
};

/** A Blob inside syscall arguments or results (Blobs are not cloned as such). */
type WireBlob = { $blob: ArrayBuffer; type: string };

export type ToWorker =
  | { type: "analyze" }
  | {
      type: "invoke";
      callId: number;
      definition: string;
      module: string;
      name: string;
      requestId: string;
      argsJson: string;
      env: Record<string, string>;
    }
  | {
      type: "syscallResult";
      id: number;
      ok: boolean;
      value?: unknown;
      error?: WireSyscallError;
    };

export type FromWorker =
  | { type: "ready" }
  | { type: "loadFailed"; error: WireError }
  | { type: "analysis"; analysis: NodeAnalysis }
  | {
      type: "log";
      callId: number | null;
      level: LogLevel;
      line: string;
      /** `console.trace`: the caller's stack, mapped on the main thread. */
      stack?: string;
    }
  | {
      type: "syscall";
      id: number;
      callId: number | null;
      kind: "async" | "js";
      op: string;
      args: unknown;
    }
  | {
      type: "done";
      callId: number;
      ok: boolean;
      value?: string;
      error?: WireError;
    };

type Registered = Record<string, unknown> & {
  invokeAction?: (requestId: string, argsJson: string) => Promise<string>;
  exportArgs?: () => string;
  exportReturns?: () => string;
};
type Definitions = Record<string, Record<string, Record<string, unknown>>>;

const port = parentPort!;
const data = workerData as NodeWorkerData;
/** The few host variables the main thread passed (`ALLOWED_HOST_ENV`). */
const hostEnv = { ...process.env };
const send = (message: FromWorker, transfer: ArrayBuffer[] = []) =>
  port.postMessage(message, transfer);

/** The call a piece of code belongs to, across its awaits. */
const currentCall = new AsyncLocalStorage<number>();
const pending = new Map<
  number,
  { resolve: (value: unknown) => void; reject: (error: Error) => void }
>();
let nextSyscallId = 0;

function syscall(
  kind: "async" | "js",
  op: string,
  args: unknown,
  transfer: ArrayBuffer[] = [],
): Promise<unknown> {
  const id = nextSyscallId++;
  return new Promise<unknown>((resolve, reject) => {
    pending.set(id, { resolve, reject });
    send(
      {
        type: "syscall",
        id,
        callId: currentCall.getStore() ?? null,
        kind,
        op,
        args,
      },
      transfer,
    );
  });
}

Object.assign(globalThis, {
  Convex: {
    syscall(op: string): string {
      // Only database reads are synchronous, and actions have no database.
      throw new Error(
        `${op} is a database call, which actions cannot make: use ctx.runQuery or ctx.runMutation`,
      );
    },
    asyncSyscall: (op: string, jsonArgs: string) =>
      syscall("async", op, jsonArgs) as Promise<string>,
    // The JS ops are the storage ones, which take or give a Blob.
    jsSyscall: async (op: string, args: Record<string, unknown>) => {
      const { value, transfer } = await encodeBlobs(args);
      return decodeBlob(await syscall("js", op, value, transfer));
    },
  },
  require: createRequire(data.requireFrom),
  __filename: data.requireFrom,
  __dirname: path.dirname(data.requireFrom),
});

const timersByCall = new Map<number | null, Map<string, number>>();
const log = (level: LogLevel, line: string, stack?: string) =>
  send({
    type: "log",
    callId: currentCall.getStore() ?? null,
    level,
    line,
    ...(stack === undefined ? {} : { stack }),
  });
const timer = (
  call: "time" | "timeLog" | "timeEnd",
  name: unknown,
  args: unknown[],
) => {
  const callId = currentCall.getStore() ?? null;
  let timers = timersByCall.get(callId);
  if (timers === undefined) {
    timers = new Map();
    timersByCall.set(callId, timers);
  }
  const label =
    name === undefined
      ? "default"
      : name === null
        ? "null"
        : (name as { toString(): string }).toString();
  const line = consoleTimer(timers, call, label, args);
  if (line !== null) log(line.level, line.line);
};
const logAt =
  (level: LogLevel) =>
  (...args: unknown[]) =>
    log(level, formatLogArgs(args));
// The methods of Convex's console (convex-backend `udf-runtime/src/02_console.ts`).
globalThis.console = {
  ...globalThis.console,
  debug: logAt("DEBUG"),
  error: logAt("ERROR"),
  info: logAt("INFO"),
  log: logAt("LOG"),
  warn: logAt("WARN"),
  trace: (...args: unknown[]) =>
    log("LOG", formatLogArgs(args), new Error().stack),
  time: (name?: unknown) => timer("time", name, []),
  timeLog: (name?: unknown, ...args: unknown[]) => timer("timeLog", name, args),
  timeEnd: (name?: unknown) => timer("timeEnd", name, []),
};

function setEnv(env: Record<string, string>): string {
  for (const name of Object.keys(process.env)) delete process.env[name];
  const sorted = Object.entries(env).sort(([a], [b]) => a.localeCompare(b));
  Object.assign(process.env, hostEnv, Object.fromEntries(sorted));
  return createHash("md5").update(JSON.stringify(sorted)).digest("hex");
}

let loaded: { envHash: string; definitions: Definitions } | null = null;

async function load(env: Record<string, string>): Promise<Definitions> {
  const envHash = setEnv(env);
  if (loaded?.envHash !== envHash) {
    const module = (await import(`${data.bundleUrl}?envHash=${envHash}`)) as {
      definitions: Definitions;
    };
    loaded = { envHash, definitions: module.definitions };
  }
  return loaded.definitions;
}

/** `analyzeModule`: every export that is a registered function, by its own properties. */
function analyze(definitions: Definitions): NodeAnalysis {
  const has = (value: object, key: string) =>
    Object.prototype.hasOwnProperty.call(value, key);
  const analysis: NodeAnalysis = {};
  for (const [definition, modules] of Object.entries(definitions)) {
    analysis[definition] = {};
    for (const [module, exports] of Object.entries(modules)) {
      const functions: AnalyzedNodeFunction[] = [];
      for (const [name, value] of Object.entries(exports)) {
        if (
          value === undefined ||
          value === null ||
          (typeof value !== "object" && typeof value !== "function")
        )
          continue;
        const fn = value as Registered;
        const udfType =
          has(fn, "isAction") && has(fn, "invokeAction")
            ? "action"
            : has(fn, "isQuery") && has(fn, "invokeQuery")
              ? "query"
              : has(fn, "isMutation") && has(fn, "invokeMutation")
                ? "mutation"
                : has(fn, "isHttp") &&
                    (has(fn, "invokeHttpEndpoint") ||
                      has(fn, "invokeHttpAction"))
                  ? "httpAction"
                  : null;
        if (udfType === null) continue;
        const isPublic = has(fn, "isPublic");
        const isInternal = has(fn, "isInternal");
        if (isPublic && isInternal) continue;
        functions.push({
          name,
          udfType,
          visibility: isPublic ? "public" : isInternal ? "internal" : null,
          args: typeof fn.exportArgs === "function" ? fn.exportArgs() : null,
          returns:
            typeof fn.exportReturns === "function" ? fn.exportReturns() : null,
        });
      }
      analysis[definition][module] = functions;
    }
  }
  return analysis;
}

async function invoke(
  message: Extract<ToWorker, { type: "invoke" }>,
): Promise<string> {
  const definitions = await load(message.env);
  const fn = definitions[message.definition]?.[message.module]?.[
    message.name
  ] as Registered | undefined;
  if (fn?.invokeAction === undefined) {
    throw new Error(
      `\`${message.name}\` wasn't registered as a Convex action in \`${message.module}.js\``,
    );
  }
  // Convex's Node executor races the action with its timer (`executeInner`);
  // a synchronous loop never lets it fire, and the main thread ends those.
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ActionTimeout(
            `Action \`${message.name}\` execution timed out (maximum duration ${data.timeoutMs / 1000}s)`,
          ),
        ),
      data.timeoutMs,
    );
  });
  try {
    return await Promise.race([
      fn.invokeAction(message.requestId, message.argsJson),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

class ActionTimeout extends Error {}

function wireError(error: unknown): WireError {
  if (error instanceof ActionTimeout)
    return { name: "Error", message: error.message, system: true };
  // `invokeAction` has already serialized a ConvexError's data.
  return thrownParts(error);
}

async function encodeBlobs(
  args: Record<string, unknown>,
): Promise<{ value: Record<string, unknown>; transfer: ArrayBuffer[] }> {
  const value: Record<string, unknown> = {};
  const transfer: ArrayBuffer[] = [];
  for (const [key, item] of Object.entries(args)) {
    if (item instanceof Blob) {
      const bytes = await item.arrayBuffer();
      value[key] = { $blob: bytes, type: item.type } satisfies WireBlob;
      transfer.push(bytes);
    } else {
      value[key] = item;
    }
  }
  return { value, transfer };
}

function decodeBlob(value: unknown): unknown {
  if (
    value !== null &&
    typeof value === "object" &&
    "$blob" in value &&
    (value as WireBlob).$blob instanceof ArrayBuffer
  ) {
    const { $blob, type } = value as WireBlob;
    return new Blob([$blob], { type });
  }
  return value;
}

port.on("message", (message: ToWorker) => {
  switch (message.type) {
    case "analyze":
      load(data.env).then(
        (definitions) =>
          send({ type: "analysis", analysis: analyze(definitions) }),
        (error: unknown) =>
          send({ type: "loadFailed", error: wireError(error) }),
      );
      return;
    case "invoke":
      currentCall
        .run(message.callId, () => invoke(message))
        .then(
          (value) =>
            send({ type: "done", callId: message.callId, ok: true, value }),
          (error: unknown) =>
            send({
              type: "done",
              callId: message.callId,
              ok: false,
              error: wireError(error),
            }),
        )
        .finally(() => timersByCall.delete(message.callId));
      return;
    case "syscallResult": {
      const waiter = pending.get(message.id);
      if (waiter === undefined) return;
      pending.delete(message.id);
      if (message.ok) waiter.resolve(message.value);
      else waiter.reject(syscallError(message.error ?? { message: "" }));
      return;
    }
    default:
      message satisfies never;
  }
});
send({ type: "ready" });
