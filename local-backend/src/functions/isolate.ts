/**
 * The sandbox the app's functions run in: a `node:vm` context standing in for
 * Convex's V8 isolate.
 *
 * The bundle sees only web-platform globals plus `globalThis.Convex`, not Node
 * (no `require`, `process` beyond `process.env`, `Buffer`), so code that would
 * fail on real Convex fails here too. Inside queries and mutations `Date` is
 * frozen at the function's start and timers and `fetch` throw, as in Convex;
 * actions run freely. `console.*` becomes the function's log lines.
 * A reload builds a fresh context: no module state leaks between builds.
 *
 * Usage:
 *   const isolate = createIsolate(bundle, { convex: syscalls, env, onStrayLog });
 *   isolate.modules["messages"].list.invokeQuery(argsJson);
 */
import type { webcrypto } from "node:crypto";
import { SourceMap } from "node:module";
import vm from "node:vm";
import type { SchemaJson } from "../storage/database.ts";
import {
  type ComponentDefinition,
  type ComponentTree,
  createComponentTree,
  type RuntimeDefinition,
} from "./components.ts";
import { type TimedHooks, TimedRealm } from "./deadline.ts";
import { digestNow } from "./digest.ts";
import {
  appendLogLine,
  consoleTimer,
  formatLogArgs,
  inspectValue,
  type LogLevel,
} from "./consoleFormat.ts";
import { jsError, uncaught } from "./errors.ts";
import { OffThread } from "./offThread.ts";
import {
  type ConvexGlobal,
  currentRequest,
  type RequestContext,
} from "./syscalls.ts";

export type { LogLevel } from "./consoleFormat.ts";

export type Bundle = {
  /** An IIFE script that assigns `globalThis.__convexDefinitions` and `__convexApp` (loader.ts). */
  code: string;
  /** The esbuild source map (JSON), used to point stack frames at the app's sources. */
  sourceMap: string;
  /** Absolute path the bundle is attributed to in stack traces. */
  filename: string;
  /** Directory stack-frame paths are shown relative to (the project root). */
  sourceRoot: string;
};

export type ModuleExports = Record<string, unknown>;

export type Isolate = {
  /** The app's own modules (`components.root.modules`). */
  modules: Record<string, ModuleExports>;
  /** The app's schema with every component's tables under their internal names. */
  schema: SchemaJson | null;
  /** Actions and HTTP actions: a context where timers and fetch work. */
  components: ComponentTree;
  /** Queries and mutations: a second evaluation of the bundle whose code runs under a deadline. */
  udf: TimedRealm<ComponentTree>;
  /** Queries and mutations moved off the main thread (`deadline.ts` MovedError): isolate workers. */
  offThread: OffThread;
  /** The default export of `auth.config.ts`, if there is one. */
  authConfig: unknown;
  /** An error's stack frames, mapped to the app's sources as Convex prints them. */
  errorFrames(stack: string): string[];
};

/** The contract of `convex/server` registered functions (convex 1.48 `registration_impl.ts`). */
export type RegisteredFunction = {
  isQuery?: boolean;
  isMutation?: boolean;
  isAction?: boolean;
  isHttp?: boolean;
  isPublic?: boolean;
  isInternal?: boolean;
  invokeQuery?(argsJson: string): Promise<string>;
  invokeMutation?(argsJson: string): Promise<string>;
  invokeAction?(requestId: string, argsJson: string): Promise<string>;
  /** A `"use node"` action: its worker enforces the action timeout, with the Node runtime's text. */
  runsOwnTimeout?: boolean;
  exportArgs?(): string;
  exportReturns?(): string;
};

export class ModuleLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModuleLoadError";
  }
}

export function createIsolate(
  bundle: Bundle,
  options: {
    convex: ConvexGlobal;
    env: Record<string, string>;
    /** Where console output goes when no function is running (module top level). */
    onStrayLog: (level: LogLevel, line: string) => void;
    /**
     * `"use node"` modules (nodeRuntime.ts): registered functions that run in
     * a worker, by definition path and module, and the bundle their stack
     * frames point into.
     */
    node?: {
      modules: Record<string, Record<string, ModuleExports>>;
      bundle: Bundle;
    };
  },
): Isolate {
  const errorFrames = frameMapper([
    bundle,
    ...(options.node === undefined ? [] : [options.node.bundle]),
  ]);

  const host = createHost<RequestContext>(
    {
      current: currentRequest,
      writeLine: (request, level, line) => {
        if (request === undefined) options.onStrayLog(level, line);
        else appendLogLine(request.logLines, level, line);
      },
    },
    errorFrames,
  );

  const actions = evaluate(bundle, options, host, errorFrames, null);
  const udf = new TimedRealm((hooks) => {
    const { context, components } = evaluate(
      bundle,
      options,
      host,
      errorFrames,
      hooks,
    );
    return { context, modules: components };
  });
  return {
    modules: actions.components.root.modules,
    schema: actions.components.mergedSchema(),
    components: actions.components,
    udf,
    offThread: new OffThread({
      bundle,
      env: options.env,
      convex: options.convex,
      onStrayLog: options.onStrayLog,
    }),
    authConfig: (actions.context as { __convexAuthConfig?: unknown })
      .__convexAuthConfig,
    errorFrames,
  };
}

/**
 * Evaluates the bundle for an isolate worker (isolateWorker.ts): a plain
 * context, since the worker thread itself is what gets stopped, whose host
 * side reads the worker's own per-call state.
 */
export function evaluateForWorker<C extends SandboxCall>(
  bundle: Bundle,
  options: { convex: ConvexGlobal; env: Record<string, string> },
  sandbox: Sandbox<C>,
): ComponentTree {
  const errorFrames = frameMapper([bundle]);
  return evaluate(
    bundle,
    options,
    createHost(sandbox, errorFrames),
    errorFrames,
    null,
  ).components;
}

/**
 * A query or mutation call as it crosses to an isolate worker: which function
 * of which component, and its arguments as the library takes them.
 */
export type UdfCall = {
  kind: "query" | "mutation";
  componentPath: string;
  module: string;
  exportName: string;
  argsJson: string;
};

/** Starts `call` in one evaluation of the bundle (a timed context's or an isolate worker's). */
export function invokeUdf(
  components: ComponentTree,
  call: UdfCall,
): Promise<string> {
  const fn = components.get(call.componentPath)?.modules[call.module]?.[
    call.exportName
  ] as RegisteredFunction | undefined;
  if (call.kind === "mutation" && fn?.invokeMutation !== undefined)
    return fn.invokeMutation(call.argsJson);
  if (call.kind === "query" && fn?.invokeQuery !== undefined)
    return fn.invokeQuery(call.argsJson);
  return Promise.reject(
    new Error(
      `${call.module}:${call.exportName} is not a ${call.kind} of this build`,
    ),
  );
}

/** The running function as the sandbox's host side sees it. */
export type SandboxCall = Pick<
  RequestContext,
  "udfType" | "nowMs" | "componentPath"
>;

/**
 * Where the host side finds the running function and puts its log lines: the
 * main thread's RequestContext, or an isolate worker's call.
 */
export type Sandbox<C extends SandboxCall> = {
  current(): C | undefined;
  /** `call` is undefined at module top level. */
  writeLine(call: C | undefined, level: LogLevel, line: string): void;
};

type IsolateOptions = Parameters<typeof createIsolate>[1];
type Host = {
  /** The running function's component (process.env reads it). */
  componentPath(): string;
  now(): number;
  log(level: LogLevel, args: unknown[]): void;
  trace(args: unknown[], stack: string): void;
  timer(
    call: "time" | "timeLog" | "timeEnd",
    label: string,
    args: unknown[],
  ): void;
  assertAction(what: string): void;
};

/** The `__host` the prelude takes its `Date`, `console` and timer checks from. */
function createHost<C extends SandboxCall>(
  sandbox: Sandbox<C>,
  errorFrames: (stack: string) => string[],
): Host {
  const writeLine = (level: LogLevel, line: string): void =>
    sandbox.writeLine(sandbox.current(), level, line);
  /** `console.time` labels belong to one function execution. */
  const strayTimers = new Map<string, number>();
  const timersByCall = new WeakMap<object, Map<string, number>>();
  const consoleTimers = (): Map<string, number> => {
    const call = sandbox.current();
    if (call === undefined) return strayTimers;
    let timers = timersByCall.get(call);
    if (timers === undefined) {
      timers = new Map();
      timersByCall.set(call, timers);
    }
    return timers;
  };
  return {
    componentPath: () => sandbox.current()?.componentPath ?? "",
    now(): number {
      const call = sandbox.current();
      return call !== undefined && call.udfType !== "action"
        ? call.nowMs
        : Date.now();
    },
    log(level: LogLevel, args: unknown[]): void {
      writeLine(level, formatLogArgs(args));
    },
    /** `console.trace`: the arguments, then the caller's frames (convex-backend `op_console_trace`). */
    trace(args: unknown[], stack: string): void {
      const frames = jsError("", errorFrames(stack)).trace;
      writeLine("LOG", [...args.map(inspectValue), frames].join(" "));
    },
    timer(
      call: "time" | "timeLog" | "timeEnd",
      label: string,
      args: unknown[],
    ) {
      const line = consoleTimer(consoleTimers(), call, label, args);
      if (line !== null) writeLine(line.level, line.line);
    },
    /** Timers and fetch would make queries and mutations non-deterministic; Convex forbids them there. */
    assertAction(what: string): void {
      const call = sandbox.current();
      if (call !== undefined && call.udfType !== "action") {
        throw new Error(
          `Can't use ${what} in queries and mutations. Please consider using an action.`,
        );
      }
    },
  };
}

/**
 * Evaluates the bundle in a new context. With `timed` hooks the context gets
 * its own microtask queue and the deadline's entry points (see `deadline.ts`).
 */
function evaluate(
  bundle: Bundle,
  options: Pick<IsolateOptions, "convex" | "env" | "node">,
  host: Host,
  errorFrames: (stack: string) => string[],
  timed: TimedHooks | null,
): { context: vm.Context; components: ComponentTree } {
  // Set once the bundle has run; `process.env` reads it per call.
  let components: ComponentTree | undefined;
  const context = vm.createContext(
    {
      Convex:
        timed === null ? options.convex : timed.wrapConvex(options.convex),
      process: Object.freeze({
        env: componentAwareEnv(
          Object.freeze({ ...options.env }),
          () => host.componentPath(),
          (path) => components?.get(path),
        ),
      }),
      crypto: isolateCrypto(),
      // Keys from `crypto.subtle` are the host's; jose checks `instanceof CryptoKey`.
      CryptoKey: (globalThis as unknown as { CryptoKey: unknown }).CryptoKey,
      TextEncoder,
      TextDecoder,
      URL,
      URLSearchParams,
      atob,
      btoa,
      structuredClone,
      Blob,
      File,
      FormData,
      Headers,
      Request,
      Response,
      AbortController,
      AbortSignal,
      Event,
      EventTarget,
      ReadableStream,
      WritableStream,
      TransformStream,
      queueMicrotask,
      __host: host,
      __hostTimers: {
        setTimeout,
        clearTimeout,
        setInterval,
        clearInterval,
        fetch,
      },
    },
    {
      name: timed === null ? "convex-actions" : "convex-functions",
      codeGeneration: { strings: false, wasm: true },
      ...(timed === null ? {} : { microtaskMode: "afterEvaluate" as const }),
    },
  );
  vm.runInContext(PRELUDE, context, { filename: "local-backend:prelude" });
  if (timed !== null) {
    vm.runInContext(timed.prelude, context, {
      filename: "local-backend:timed-prelude",
    });
    timed.installEntry(context);
  }

  try {
    // displayErrors: false keeps Node from prefixing the stack with a code frame.
    new vm.Script(withFastGlobals(bundle.code), {
      filename: bundle.filename,
      lineOffset: -1,
    }).runInContext(context, { displayErrors: false });
  } catch (error) {
    // "Uncaught Error: boom at convex/messages.ts:3:7": the error and where it
    // was thrown, on one line.
    const e = error as { stack?: string; message?: string; name?: string };
    const frames = e.stack === undefined ? [] : errorFrames(e.stack);
    const where = /\(?\.\.\/([^()\s]+:\d+:\d+)\)?$/.exec(frames[0] ?? "")?.[1];
    throw new ModuleLoadError(
      `Failed to load the functions: ${uncaught(e.name ?? "Error", e.message ?? String(error))}${where === undefined ? "" : ` at ${where}`}`,
    );
  }
  const globals = context as {
    __convexDefinitions?: Record<
      string,
      { modules: Record<string, ModuleExports>; schema?: { export(): string } }
    >;
    __convexApp?: RuntimeDefinition;
  };
  const definitions: Record<string, ComponentDefinition> = {};
  for (const [key, { modules, schema }] of Object.entries(
    globals.__convexDefinitions ?? { "": { modules: {} } },
  )) {
    definitions[key] = {
      modules: { ...modules, ...options.node?.modules[key] },
      schema: exportSchema(schema, key),
    };
  }
  try {
    components = createComponentTree(globals.__convexApp ?? null, definitions);
  } catch (error) {
    throw new ModuleLoadError(
      `Failed to load the components: ${(error as Error).message}`,
    );
  }
  return { context, components };
}

function exportSchema(
  schemaDefinition: { export(): string } | undefined,
  definitionPath: string,
): SchemaJson | null {
  if (schemaDefinition === undefined) return null;
  if (typeof schemaDefinition.export !== "function") {
    throw new ModuleLoadError(
      `${definitionPath === "" ? "schema.ts" : `${definitionPath}/schema`} must \`export default defineSchema({...})\``,
    );
  }
  return JSON.parse(schemaDefinition.export()) as SchemaJson;
}

/**
 * Builtins the bundle sees as local bindings. Every global lookup in a
 * `node:vm` context goes through the context's property interceptors, so
 * `Math.sqrt` in a loop costs ~0.5 µs: 30x slower than V8 without them, which
 * would make Convex's 1 s buy a thirtieth of the work it buys on Convex.
 */
const FAST_GLOBALS = [
  "Array",
  "ArrayBuffer",
  "BigInt",
  "Boolean",
  "DataView",
  "Date",
  "Error",
  "JSON",
  "Map",
  "Math",
  "Number",
  "Object",
  "Promise",
  "RangeError",
  "Reflect",
  "Set",
  "String",
  "Symbol",
  "TypeError",
  "Uint8Array",
  "WeakMap",
  "WeakSet",
  "console",
  "isNaN",
  "parseFloat",
  "parseInt",
].join(", ");

/** The bundle inside a function taking FAST_GLOBALS; its own lines keep their numbers (`lineOffset: -1`). */
function withFastGlobals(code: string): string {
  return `(function (${FAST_GLOBALS}) {\n${code}\n})(${FAST_GLOBALS});`;
}

/**
 * Runs in the context before the bundle. `Date` keeps its prototype, so
 * `instanceof Date` and subclasses still work; only "now" changes.
 */
const PRELUDE = `
"use strict";
(() => {
  const host = globalThis.__host;
  const timers = globalThis.__hostTimers;
  delete globalThis.__host;
  delete globalThis.__hostTimers;

  // The host's TextEncoder returns the host realm's Uint8Array, which fails
  // \`instanceof Uint8Array\` here (jose, used by Convex Auth, checks it).
  const HostTextEncoder = globalThis.TextEncoder;
  class TextEncoder {
    #inner = new HostTextEncoder();
    get encoding() { return this.#inner.encoding; }
    encode(input) {
      const bytes = this.#inner.encode(input);
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    encodeInto(source, destination) { return this.#inner.encodeInto(source, destination); }
  }
  globalThis.TextEncoder = TextEncoder;

  const RealDate = globalThis.Date;
  function Date(...args) {
    if (new.target === undefined) return new RealDate(host.now()).toString();
    return Reflect.construct(RealDate, args.length === 0 ? [host.now()] : args, new.target);
  }
  Object.setPrototypeOf(Date, RealDate);
  Date.prototype = RealDate.prototype;
  Object.defineProperty(RealDate.prototype, "constructor", { value: Date, writable: true, configurable: true });
  Date.now = () => host.now();
  globalThis.Date = Date;

  // Convex's console has exactly these methods (convex-backend
  // udf-runtime/src/02_console.ts); labels are stringified as there.
  const label = (value) => value === undefined ? "default" : value === null ? "null" : value.toString();
  const log = (level) => (...args) => host.log(level, args);
  globalThis.console = {
    debug: log("DEBUG"),
    error: log("ERROR"),
    info: log("INFO"),
    log: log("LOG"),
    warn: log("WARN"),
    trace: (...args) => host.trace(args, new Error().stack),
    time: (name) => host.timer("time", label(name), []),
    timeLog: (name, ...args) => host.timer("timeLog", label(name), args),
    timeEnd: (name) => host.timer("timeEnd", label(name), []),
  };

  const actionOnly = (name, fn) => function (...args) {
    host.assertAction(name);
    return fn(...args);
  };
  globalThis.setTimeout = actionOnly("setTimeout", timers.setTimeout);
  globalThis.clearTimeout = actionOnly("clearTimeout", timers.clearTimeout);
  globalThis.setInterval = actionOnly("setInterval", timers.setInterval);
  globalThis.clearInterval = actionOnly("clearInterval", timers.clearInterval);
  globalThis.fetch = actionOnly("fetch()", timers.fetch);
})();
`;

/**
 * Web Crypto for the isolate: SHA digests are computed in place (digest.ts),
 * and still returned as a promise; everything else is the platform's. In a
 * timed context the prelude resolves them in the context's own queue
 * (deadline.ts TIMED_PRELUDE), so a function hashing its session's secret
 * ends in the window it started in.
 */
function isolateCrypto(): Pick<
  webcrypto.Crypto,
  "subtle" | "getRandomValues" | "randomUUID"
> {
  const { subtle } = globalThis.crypto;
  type Subtle = webcrypto.SubtleCrypto;
  const delegate = <K extends keyof Subtle>(name: K): Subtle[K] =>
    (subtle[name] as (...args: unknown[]) => unknown).bind(subtle) as Subtle[K];
  const digest: Subtle["digest"] = (algorithm, data) => {
    const hash = digestNow(algorithm, data);
    return hash === undefined
      ? subtle.digest(algorithm, data)
      : Promise.resolve(hash);
  };
  const isolateSubtle: Subtle = {
    decrypt: delegate("decrypt"),
    deriveBits: delegate("deriveBits"),
    deriveKey: delegate("deriveKey"),
    digest,
    encrypt: delegate("encrypt"),
    exportKey: delegate("exportKey"),
    generateKey: delegate("generateKey"),
    importKey: delegate("importKey"),
    sign: delegate("sign"),
    unwrapKey: delegate("unwrapKey"),
    verify: delegate("verify"),
    wrapKey: delegate("wrapKey"),
  };
  return {
    subtle: isolateSubtle,
    getRandomValues: (array) => globalThis.crypto.getRandomValues(array),
    randomUUID: () => globalThis.crypto.randomUUID(),
  };
}

/**
 * An error's stack frames as Convex prints them (convex-backend
 * `common/src/errors.rs` `JsError::from_frames`): bundle positions mapped
 * through the source map to `../convex/file.ts:L:C` (paths relative to the
 * bundle's folder, as the CLI's bundle has them), frames outside the bundle
 * (the host) dropped, and leading and trailing frames inside the `convex`
 * package's own runtime (`convex/src/server/impl`) omitted.
 */
export function frameMapper(
  bundles: readonly Bundle[],
): (stack: string) => string[] {
  const sources = bundles.map((bundle) => ({
    bundle,
    location: new RegExp(
      // A query string: the Node runtime imports its bundle as `bundle.mjs?envHash=…`.
      `(\\(|at )${escapeRegExp(bundle.filename)}(?:\\?[^:()\\s]*)?:(\\d+):(\\d+)`,
    ),
    sourceMap: new SourceMap(
      JSON.parse(bundle.sourceMap) as ConstructorParameters<
        typeof SourceMap
      >[0],
    ),
  }));
  return (stack) => mapFrames(stack, sources);
}

function mapFrames(
  stack: string,
  sources: readonly {
    bundle: Bundle;
    location: RegExp;
    sourceMap: SourceMap;
  }[],
): string[] {
  const frames: { line: string; internal: boolean }[] = [];
  for (const line of stack.split("\n")) {
    if (!/^\s+at /.test(line)) continue;
    const found = sources
      .map((s) => ({ ...s, match: s.location.exec(line) }))
      .find((s) => s.match !== null);
    if (found === undefined) continue;
    const { bundle, sourceMap } = found;
    const match = found.match!;
    const entry = sourceMap.findEntry(
      Number(match[2]) - 1,
      Number(match[3]) - 1,
    ) as {
      originalSource?: string;
      originalLine?: number;
      originalColumn?: number;
    };
    if (entry.originalSource === undefined) continue;
    const source = `../${relativeSource(entry.originalSource, bundle.sourceRoot)}`;
    frames.push({
      line: `    ${line
        .trim()
        .replace(
          match[0],
          `${match[1]}${source}:${entry.originalLine! + 1}:${entry.originalColumn! + 1}`,
        )}`,
      internal:
        source.includes("convex/src/server/impl") ||
        source.includes("convex/dist/"),
    });
  }
  while (frames.length > 0 && frames[0].internal) frames.shift();
  while (frames.length > 0 && frames[frames.length - 1].internal) frames.pop();
  return frames.map((f) => f.line);
}

function relativeSource(source: string, root: string): string {
  const path = source.replace(/^file:\/\//, "");
  return path.startsWith(root)
    ? path.slice(root.length).replace(/^\//, "")
    : path;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * `process.env` as each function sees it: the deployment's variables in the
 * app, and in a component only what its parent passed in `use(component,
 * { env })`, as on Convex, where a component cannot read the app's
 * environment. One object for all (modules keep `env = process.env`), so it
 * looks the running function's component up on every read; read-only, like a
 * frozen object.
 */
function componentAwareEnv(
  appEnv: Readonly<Record<string, string>>,
  componentPath: () => string,
  component: (path: string) => { env: Record<string, string> } | undefined,
): Record<string, string> {
  const current = (): Readonly<Record<string, string>> => {
    const path = componentPath();
    return path === "" ? appEnv : (component(path)?.env ?? {});
  };
  const target: Record<string, string> = {};
  return new Proxy(target, {
    get: (_, key) => (typeof key === "string" ? current()[key] : undefined),
    has: (_, key) => typeof key === "string" && key in current(),
    ownKeys: () => Object.keys(current()),
    getOwnPropertyDescriptor: (_, key) => {
      const env = current();
      return typeof key === "string" && key in env
        ? { value: env[key], enumerable: true, configurable: true }
        : undefined;
    },
    set: () => false,
    defineProperty: () => false,
    deleteProperty: () => false,
  });
}
