/**
 * The Node runtime for `"use node"` actions: a small pool of worker threads
 * per build, each running the app's Node bundle (loader.ts) one action at a
 * time, with the main thread answering their syscalls through the same
 * `globalThis.Convex` handlers the isolate uses (syscalls.ts), so
 * `ctx.runQuery`, `ctx.scheduler`, `ctx.storage` and `ctx.auth` have one
 * implementation. Worker side: nodeWorker.ts.
 *
 * As on Convex (convex-backend `node_executor`), a build's Node modules are
 * analysed at load: they may define actions only, and a query, mutation or
 * HTTP action there refuses the build with Convex's text. The analysed
 * functions become registered-function stubs in the isolate's component tree,
 * so lookup, visibility, argument and return validation, size limits,
 * scheduling and function handles treat them like any other action.
 *
 * A worker's life: spawned on demand (at most `maxWorkers` running at once,
 * further calls queue, at most MAX_QUEUED_CALLS) -> `ready` -> one call at a
 * time -> idle (terminated after IDLE_WORKER_MS, or when its build is
 * retired). A call that runs past the action timeout, or whose worker exits
 * (`process.exit()`, an uncaught exception, the memory limit), fails with an
 * error of its own; the worker is terminated and replaced on demand, and the
 * backend keeps serving. A worker waiting on a nested `ctx.runAction` does not
 * count against `maxWorkers`, so node actions calling node actions cannot
 * starve the pool.
 *
 * Usage:
 *   const runtime = new NodeRuntime({ convex, onStrayLog });
 *   const generation = await runtime.prepare(bundle.node, env);   // analyses
 *   createIsolate(bundle, { ..., node: { modules: generation.modules(envOf), bundle: generation.bundle } });
 *   generation.retire();  // when the next build is installed
 */
import { booting } from "./booting.ts";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { appendLogLine, type LogLevel } from "./consoleFormat.ts";
import { ACTION_TIMEOUT_MS } from "./deadline.ts";
import {
  jsError,
  rethrown,
  SystemError,
  uncaught,
  wireSyscallError,
} from "./errors.ts";
import {
  type Bundle,
  frameMapper,
  ModuleLoadError,
  type ModuleExports,
} from "./isolate.ts";
import type {
  FromWorker,
  NodeAnalysis,
  NodeWorkerData,
  ToWorker,
  WireError,
} from "./nodeWorker.ts";
import {
  type ConvexGlobal,
  currentRequest,
  type RequestContext,
  requestStorage,
} from "./syscalls.ts";

/** The app's `"use node"` modules, bundled for Node (loader.ts). */
export type NodeBundle = {
  /** An ES module exporting `definitions`: definition path -> module name -> exports. */
  code: string;
  sourceMap: string;
  /** Directory stack-frame paths are shown relative to (the project root). */
  sourceRoot: string;
  /** A path inside the functions folder, where bare `require`s resolve from. */
  requireFrom: string;
};

const DEFAULT_MAX_WORKERS = 4;
const MAX_QUEUED_CALLS = 1_000;
const IDLE_WORKER_MS = 60_000;
/** Convex's Node actions get 512 MiB (docs.convex.dev/functions/runtimes). */
const WORKER_MEMORY_MB = 512;
const BOOT_URL = new URL("./workerBoot.mjs", import.meta.url);
/**
 * How long past its limit a worker may stay unresponsive (a synchronous
 * loop, which its own timer cannot interrupt) before it is terminated.
 */
const HANG_GRACE_MS = 1_000;
/** convex-backend `node_executor` `EXECUTE_TIMEOUT_RESPONSE_JSON`: a worker that had to be killed. */
const HUNG_MESSAGE =
  "Function execution unexpectedly timed out. Check your function for infinite loops or other long-running operations.";
/** `ARGS_TOO_LARGE_RESPONSE_MESSAGE`: Node actions take 5 MiB of arguments. */
const NODE_MAX_ARGS_BYTES = 5 * 1024 * 1024;
const ARGS_TOO_LARGE =
  "Node actions arguments size is too large. The maximum size is 5 MiB. Reduce the size of the arguments or consider using Convex runtime actions instead, which have a 16 MiB limit. See https://docs.convex.dev/functions/runtimes";
/** Host variables an action may see (`setEnvironmentVariables` in Convex's executor). */
const ALLOWED_HOST_ENV = ["PATH", "PWD", "LANG", "NODE_PATH", "TZ"];
/** The op whose caller waits on another action: its worker is lent out meanwhile. */
const NESTED_ACTION_OP = "1.0/actions/action";

export type NodeRuntimeOptions = {
  convex: ConvexGlobal;
  /** Where log lines go that belong to no running call (module top level, stragglers). */
  onStrayLog: (level: LogLevel, line: string) => void;
  /** Wall-clock limit of one action; Convex's 10 minutes by default. */
  timeoutMs?: number;
  /** Workers running actions at once, per build. */
  maxWorkers?: number;
};

export class NodeRuntime {
  readonly #options: NodeRuntimeOptions;
  readonly #generations = new Set<NodeGeneration>();

  constructor(options: NodeRuntimeOptions) {
    this.#options = options;
  }

  /**
   * Starts a build's first worker and analyses its modules under `env`
   * (module top level sees it, as on Convex). Throws ModuleLoadError when a
   * module fails to load or defines anything but actions.
   */
  async prepare(
    bundle: NodeBundle,
    env: Record<string, string>,
  ): Promise<NodeGeneration> {
    const generation = new NodeGeneration(bundle, env, this.#options, () =>
      this.#generations.delete(generation),
    );
    this.#generations.add(generation);
    try {
      await generation.analyze();
      return generation;
    } catch (error) {
      generation.retire();
      throw error;
    }
  }

  /** Terminates every worker; calls still running fail. */
  async close(): Promise<void> {
    await Promise.all([...this.#generations].map((g) => g.close()));
  }
}

type Call = {
  id: number;
  context: RequestContext;
  resolve(value: string): void;
  reject(error: unknown): void;
  timer: NodeJS.Timeout;
};

/** One worker thread and the call it runs. */
type PoolWorker = {
  worker: Worker;
  ready: Promise<void>;
  call: Call | null;
  /** Waiting on a nested action: not counted against `maxWorkers`. */
  lent: boolean;
  alive: boolean;
  /** The uncaught error that is ending the worker, if any. */
  fatal: (Error & { code?: string }) | null;
  idleTimer: NodeJS.Timeout | null;
};

/** A build's Node modules and the workers that run them. */
export class NodeGeneration {
  analysis: NodeAnalysis = {};
  /** Where stack frames point: the bundle file as the workers import it. */
  readonly bundle: Bundle;
  readonly #dir: string;
  readonly #workerData: NodeWorkerData;
  readonly #options: NodeRuntimeOptions;
  readonly #maxWorkers: number;
  readonly #timeoutMs: number;
  readonly #onGone: () => void;
  readonly #frames: (stack: string) => string[];
  readonly #workers = new Set<PoolWorker>();
  readonly #idle: PoolWorker[] = [];
  readonly #queue: ((worker: PoolWorker) => void)[] = [];
  /** Workers running a call and not lent out. */
  #busy = 0;
  #nextCallId = 0;
  #retired = false;

  constructor(
    bundle: NodeBundle,
    env: Record<string, string>,
    options: NodeRuntimeOptions,
    onGone: () => void,
  ) {
    this.#options = options;
    this.#maxWorkers = options.maxWorkers ?? DEFAULT_MAX_WORKERS;
    this.#timeoutMs = options.timeoutMs ?? ACTION_TIMEOUT_MS;
    this.#onGone = onGone;
    // Outside the project: nothing to clean up there, and externals are
    // imported by absolute URL (loader.ts), so they resolve from anywhere.
    this.#dir = fs.mkdtempSync(path.join(os.tmpdir(), "local-backend-node-"));
    const file = path.join(this.#dir, "bundle.mjs");
    fs.writeFileSync(file, bundle.code);
    const url = pathToFileURL(file).href;
    this.bundle = {
      code: bundle.code,
      sourceMap: bundle.sourceMap,
      filename: url,
      sourceRoot: bundle.sourceRoot,
    };
    this.#frames = frameMapper([this.bundle]);
    this.#workerData = {
      bundleUrl: url,
      requireFrom: bundle.requireFrom,
      env,
      timeoutMs: this.#timeoutMs,
    };
  }

  /** Whether this generation runs exactly `bundle` (a rebuild that left the Node modules alone). */
  serves(bundle: NodeBundle): boolean {
    return (
      bundle.code === this.bundle.code &&
      bundle.sourceMap === this.bundle.sourceMap &&
      bundle.requireFrom === this.#workerData.requireFrom
    );
  }

  /** Imports the bundle in a first worker and checks what it defines. */
  async analyze(): Promise<void> {
    const worker = this.#spawn();
    this.#idle.push(worker);
    await worker.ready;
    const analysis = await new Promise<NodeAnalysis>((resolve, reject) => {
      const onMessage = (message: FromWorker) => {
        if (message.type === "analysis") resolve(message.analysis);
        if (message.type === "loadFailed")
          reject(this.#loadError(message.error));
      };
      worker.worker.on("message", onMessage);
      worker.worker.once("exit", () =>
        reject(
          new ModuleLoadError(
            "Failed to load the functions: the Node.js runtime exited while loading them",
          ),
        ),
      );
      this.#post(worker, { type: "analyze" });
    });
    for (const modules of Object.values(analysis)) {
      for (const [module, functions] of Object.entries(modules)) {
        const other = functions.find((f) => f.udfType !== "action");
        if (other !== undefined) {
          // convex-backend `node_executor/src/executor.rs` `analyze`.
          throw new ModuleLoadError(
            `Failed to load the functions: \`${other.name}\` defined in \`${module}.js\` is a ${UDF_TYPE_NAMES[other.udfType]} function. Only actions can be defined in Node.js. See https://docs.convex.dev/functions/actions for more details.`,
          );
        }
      }
    }
    this.analysis = analysis;
    this.#idleTimeout(worker);
  }

  /**
   * The registered-function stubs of every Node module, by definition path
   * and module. `envOf` gives the variables a call in a component sees.
   */
  modules(
    envOf: (componentPath: string) => Record<string, string>,
  ): Record<string, Record<string, ModuleExports>> {
    const result: Record<string, Record<string, ModuleExports>> = {};
    for (const [definition, modules] of Object.entries(this.analysis)) {
      result[definition] = {};
      for (const [module, functions] of Object.entries(modules)) {
        const exports: ModuleExports = {};
        for (const fn of functions) {
          exports[fn.name] = {
            isAction: true,
            ...(fn.visibility === "public" ? { isPublic: true } : {}),
            ...(fn.visibility === "internal" ? { isInternal: true } : {}),
            exportArgs: () => fn.args ?? '{"type":"any"}',
            exportReturns: () => fn.returns ?? "null",
            runsOwnTimeout: true,
            invokeAction: (requestId: string, argsJson: string) => {
              const context = currentRequest();
              if (context === undefined)
                throw new Error("A Node action was called outside a request");
              if (Buffer.byteLength(argsJson) > NODE_MAX_ARGS_BYTES)
                return Promise.reject(new SystemError(ARGS_TOO_LARGE));
              return this.#invoke(context, {
                definition,
                module,
                name: fn.name,
                requestId,
                argsJson,
                env: envOf(context.componentPath),
              });
            },
          };
        }
        result[definition][module] = exports;
      }
    }
    return result;
  }

  /** No new workers stay around; idle ones go now, busy ones when their call ends. */
  retire(): void {
    this.#retired = true;
    for (const worker of this.#idle.splice(0)) this.#kill(worker);
    this.#maybeGone();
  }

  async close(): Promise<void> {
    this.#retired = true;
    const exits = [...this.#workers].map((w) => {
      w.call?.reject(
        new SystemError("The local backend stopped while this action ran"),
      );
      return w.worker.terminate();
    });
    await Promise.allSettled(exits);
    this.#maybeGone();
  }

  async #invoke(
    context: RequestContext,
    message: Omit<Extract<ToWorker, { type: "invoke" }>, "type" | "callId">,
  ): Promise<string> {
    const worker = await this.#acquire();
    try {
      await worker.ready;
    } catch (error) {
      this.#release(worker);
      throw error;
    }
    const id = this.#nextCallId++;
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        // Terminating stops even a synchronous loop (V8 interrupts it).
        this.#kill(worker);
        this.#finish(worker, () => reject(new SystemError(HUNG_MESSAGE)));
      }, this.#timeoutMs + HANG_GRACE_MS);
      worker.call = { id, context, resolve, reject, timer };
      this.#post(worker, { type: "invoke", callId: id, ...message });
    });
  }

  #acquire(): Promise<PoolWorker> {
    if (this.#queue.length >= MAX_QUEUED_CALLS) {
      return Promise.reject(
        new SystemError(
          `Too many Node actions are waiting to run (${MAX_QUEUED_CALLS} queued behind ${this.#maxWorkers} running); try again later`,
        ),
      );
    }
    const acquired = new Promise<PoolWorker>((resolve) =>
      this.#queue.push(resolve),
    );
    this.#drain();
    return acquired;
  }

  /** Hands idle or new workers to waiting calls while the pool has room. */
  #drain(): void {
    while (this.#queue.length > 0) {
      let worker = this.#idle.pop();
      if (worker === undefined) {
        if (this.#busy >= this.#maxWorkers) return;
        worker = this.#spawn();
      }
      if (worker.idleTimer !== null) clearTimeout(worker.idleTimer);
      worker.idleTimer = null;
      this.#busy++;
      this.#queue.shift()!(worker);
    }
  }

  /** Ends the worker's call (settling it with `settle`) and frees its slot. */
  #finish(worker: PoolWorker, settle: (call: Call) => void): void {
    const call = worker.call;
    if (call === null) return;
    worker.call = null;
    clearTimeout(call.timer);
    settle(call);
    this.#release(worker);
  }

  #release(worker: PoolWorker): void {
    if (!worker.lent) this.#busy--;
    worker.lent = false;
    if (worker.alive && !this.#retired) {
      this.#idle.push(worker);
      this.#idleTimeout(worker);
    } else {
      this.#kill(worker);
    }
    this.#drain();
  }

  #idleTimeout(worker: PoolWorker): void {
    worker.idleTimer = setTimeout(() => {
      const index = this.#idle.indexOf(worker);
      if (index !== -1) this.#idle.splice(index, 1);
      this.#kill(worker);
    }, IDLE_WORKER_MS);
    worker.idleTimer.unref();
  }

  #spawn(): PoolWorker {
    const env = Object.fromEntries(
      ALLOWED_HOST_ENV.flatMap((name) =>
        process.env[name] === undefined ? [] : [[name, process.env[name]]],
      ),
    ) as Record<string, string>;
    const worker = new Worker(BOOT_URL, {
      argv: ["./nodeWorker.ts"],
      workerData: this.#workerData,
      // The boot script registers tsx itself; the parent's loader flags would
      // register it twice.
      execArgv: [],
      // The host's variables (keys, tokens) never reach app code.
      env,
      resourceLimits: { maxOldGenerationSizeMb: WORKER_MEMORY_MB },
    });
    worker.unref();
    const { promise: boot, ready, failed } = booting();
    const entry: PoolWorker = {
      worker,
      ready: boot,
      call: null,
      lent: false,
      alive: true,
      fatal: null,
      idleTimer: null,
    };
    this.#workers.add(entry);
    worker.on("message", (message: FromWorker) => {
      if (message.type === "ready") ready();
      else this.#onMessage(entry, message);
    });
    worker.on("error", (error) => {
      entry.fatal = error;
    });
    worker.on("exit", (code) => {
      entry.alive = false;
      this.#workers.delete(entry);
      if (entry.idleTimer !== null) clearTimeout(entry.idleTimer);
      const index = this.#idle.indexOf(entry);
      if (index !== -1) this.#idle.splice(index, 1);
      const error = this.#exitError(entry, code);
      failed(error);
      this.#finish(entry, (call) => call.reject(error));
      this.#maybeGone();
    });
    return entry;
  }

  #exitError(worker: PoolWorker, code: number): Error {
    const fatal = worker.fatal;
    if (fatal?.code === "ERR_WORKER_OUT_OF_MEMORY") {
      return new SystemError(
        // convex-backend's Node executor words it so (users quote it in issues).
        `Node.js action execution ran out of memory (maximum memory usage: ${WORKER_MEMORY_MB} MB)`,
      );
    }
    // An exception nothing caught (a throwing timer callback) ends the
    // worker; it reads like any uncaught error of the action.
    if (fatal !== null) return fatal;
    return new SystemError(
      `The Node.js runtime running this action exited with code ${code} (process.exit() or a crash) before the action finished`,
    );
  }

  #kill(worker: PoolWorker): void {
    if (worker.idleTimer !== null) clearTimeout(worker.idleTimer);
    worker.idleTimer = null;
    if (!worker.alive) return;
    worker.alive = false;
    void worker.worker.terminate();
  }

  #maybeGone(): void {
    if (!this.#retired || this.#workers.size > 0) return;
    fs.rmSync(this.#dir, { recursive: true, force: true });
    this.#onGone();
  }

  #post(worker: PoolWorker, message: ToWorker, transfer: ArrayBuffer[] = []) {
    if (worker.alive) worker.worker.postMessage(message, transfer);
  }

  #onMessage(worker: PoolWorker, message: FromWorker): void {
    switch (message.type) {
      case "ready":
      case "analysis":
      case "loadFailed":
        return;
      case "log": {
        const call = worker.call?.id === message.callId ? worker.call : null;
        const line =
          message.stack === undefined
            ? message.line
            : [message.line, jsError("", this.#frames(message.stack)).trace]
                .filter((part) => part !== "")
                .join(" ");
        if (call === null) this.#options.onStrayLog(message.level, line);
        else appendLogLine(call.context.logLines, message.level, line);
        return;
      }
      case "syscall":
        void this.#syscall(worker, message);
        return;
      case "done":
        if (worker.call?.id !== message.callId) return;
        // A timed-out action may still have work in flight: never reuse its worker.
        if (message.error?.system === true) this.#kill(worker);
        this.#finish(worker, (call) => {
          if (message.ok) call.resolve(message.value ?? "null");
          else call.reject(this.#thrown(message.error));
        });
        return;
      default:
        message satisfies never;
    }
  }

  /** Answers one syscall in the context of the call that made it. */
  async #syscall(
    worker: PoolWorker,
    message: Extract<FromWorker, { type: "syscall" }>,
  ): Promise<void> {
    const call = worker.call;
    const reply = (
      result: Omit<Extract<ToWorker, { type: "syscallResult" }>, "type" | "id">,
      transfer: ArrayBuffer[] = [],
    ) =>
      this.#post(
        worker,
        { type: "syscallResult", id: message.id, ...result },
        transfer,
      );
    if (call === null || call.id !== message.callId) {
      reply({
        ok: false,
        error: {
          message: `${message.op} was called after its action finished: await every call before returning`,
        },
      });
      return;
    }
    const lend = message.op === NESTED_ACTION_OP && !worker.lent;
    if (lend) {
      worker.lent = true;
      this.#busy--;
      this.#drain();
    }
    try {
      const { convex } = this.#options;
      const value = await requestStorage.run(call.context, async () =>
        message.kind === "async"
          ? await convex.asyncSyscall(message.op, message.args as string)
          : await convex.jsSyscall(message.op, decodeBlobs(message.args)),
      );
      const encoded = await encodeBlob(value);
      reply({ ok: true, value: encoded.value }, encoded.transfer);
    } catch (error) {
      reply({ ok: false, error: wireSyscallError(error) });
    } finally {
      if (lend && worker.call === call && worker.lent) {
        worker.lent = false;
        this.#busy++;
      }
    }
  }

  /** A thrown value from the worker, shaped so the runner reports it as Convex does. */
  #thrown(error: WireError | undefined): Error {
    if (error?.system === true) return new SystemError(error.message);
    return rethrown(error ?? { name: "", message: "" });
  }

  /** A module that throws at load: "Uncaught Error: boom at convex/file.ts:3:7", as the isolate says it. */
  #loadError(error: WireError): ModuleLoadError {
    const frames = error.stack === undefined ? [] : this.#frames(error.stack);
    const where = /\(?\.\.\/([^()\s]+:\d+:\d+)\)?$/.exec(frames[0] ?? "")?.[1];
    return new ModuleLoadError(
      `Failed to load the functions: ${uncaught(error.name || "Error", error.message)}${where === undefined ? "" : ` at ${where}`}`,
    );
  }
}

/** convex-backend `UdfType`'s Display. */
const UDF_TYPE_NAMES = {
  action: "Action",
  query: "Query",
  mutation: "Mutation",
  httpAction: "HttpAction",
} as const;

type WireBlob = { $blob: ArrayBuffer; type: string };

function decodeBlobs(args: unknown): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(args as Record<string, unknown>)) {
    const blob = value as Partial<WireBlob> | null;
    result[key] =
      blob !== null &&
      typeof blob === "object" &&
      blob.$blob instanceof ArrayBuffer
        ? new Blob([blob.$blob], { type: blob.type ?? "" })
        : value;
  }
  return result;
}

async function encodeBlob(
  value: unknown,
): Promise<{ value: unknown; transfer: ArrayBuffer[] }> {
  if (!(value instanceof Blob)) return { value, transfer: [] };
  const bytes = await value.arrayBuffer();
  return {
    value: { $blob: bytes, type: value.type } satisfies WireBlob,
    transfer: [bytes],
  };
}
