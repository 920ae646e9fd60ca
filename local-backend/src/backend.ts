/**
 * Wires the embedded backend together: storage, the function runtime, the
 * subscription hub and the HTTP + WebSocket servers, plus reloading when the
 * functions folder changes.
 *
 * Usage:
 *   const backend = await startBackend({ functions: "convex", data: ".convex-local", port: 0 });
 *   const client = new ConvexClient(backend.url, { webSocketConstructor: WebSocket });
 *   await backend.close();
 */
import type http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createApiServer, createSiteServer } from "./http/server.ts";
import {
  type AuthFetch,
  Authenticator,
  networkFetch,
  parseAuthConfig,
  type AuthProvider,
  TokenVerifier,
} from "./functions/authentication.ts";
import type { SyncSocketOptions } from "./http/syncSocket.ts";
import { FunctionRunner } from "./functions/functionRunner.ts";
import {
  createIsolate,
  type Isolate,
  type LogLevel,
} from "./functions/isolate.ts";
import {
  buildFunctions,
  type FunctionsBundle,
  watchFunctions,
} from "./functions/loader.ts";
import { type NodeGeneration, NodeRuntime } from "./functions/nodeRuntime.ts";
import { CronRunner } from "./functions/crons.ts";
import { type Clock, Scheduler } from "./functions/scheduler.ts";
import { createSyscalls } from "./functions/syscalls.ts";
import { FileStorage } from "./functions/fileStorage.ts";
import { vectorSearchSyscalls } from "./functions/vectorSearch.ts";
import { loadOrCreateAdminKey } from "./storage/adminKey.ts";
import { Database } from "./storage/database.ts";
import {
  EnvironmentError,
  EnvironmentStore,
  type EnvironmentVariables,
} from "./storage/environment.ts";
import { SubscriptionHub } from "./sync/subscriptions.ts";

export type BackendOptions = {
  /** The app's Convex functions folder. Default "convex". */
  functions?: string;
  /** Where the SQLite database lives. Default ".convex-local". */
  data?: string;
  /** Deployment (cloud) port; 0 picks a free one. Default 3210. */
  port?: number;
  /** HTTP actions (site) port; 0 picks a free one; null disables it. Default 3211. */
  sitePort?: number | null;
  /** Interface to listen on. Default "127.0.0.1"; anything else exposes the backend. */
  host?: string;
  /** Reload when files in the functions folder change. Default true. */
  watch?: boolean;
  /** Where the backend's own messages and the functions' log lines go. Default console. */
  logger?: BackendLogger;
  /** Time for the scheduler and crons (not for function code); tests pass a fake one. */
  clock?: Clock;
  /**
   * Called once the ports accept connections and before the first build is
   * installed; start-up waits for the promise it returns. Calls that arrive
   * meanwhile wait for the build (see `startupGate.ts`). For tests of that window.
   */
  onListening?: (urls: {
    url: string;
    siteUrl: string | null;
  }) => Promise<void>;
  /** Sync socket heartbeat and send-buffer limits (`http/syncSocket.ts`); tests shorten them. */
  sync?: SyncSocketOptions;
  /** Environment variables to set (persisted in the data folder) before start. */
  env?: EnvironmentVariables;
  /** `"use node"` actions: their time limit (Convex's 10 minutes by default) and worker pool size. */
  nodeActions?: { timeoutMs?: number; maxWorkers?: number };
};

export type BackendLogger = {
  info(line: string): void;
  error(line: string): void;
};

export type Backend = {
  /** The deployment URL: pass it to ConvexClient / VITE_CONVEX_URL. */
  url: string;
  /** The HTTP actions URL (CONVEX_SITE_URL), or null when disabled. */
  siteUrl: string | null;
  port: number;
  /** The data folder's admin key (`Authorization: Convex <key>`). */
  adminKey: string;
  /** Rebuilds and reloads the functions now; resolves false (and keeps the old ones) on failure. */
  reload(): Promise<boolean>;
  close(): Promise<void>;
};

/** A start-up problem with a one-line, actionable message (CLI prints just that). */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StartupError";
  }
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);
export const INSTANCE_NAME = "local-backend";

export async function startBackend(
  options: BackendOptions = {},
): Promise<Backend> {
  const functionsDir = path.resolve(options.functions ?? "convex");
  const dataDir = path.resolve(options.data ?? ".convex-local");
  const host = options.host ?? "127.0.0.1";
  const logger = options.logger ?? {
    info: (l) => console.log(l),
    error: (l) => console.error(l),
  };

  let db: Database;
  try {
    db = Database.open(dataDir);
  } catch (error) {
    throw new StartupError((error as Error).message);
  }
  const cleanup: (() => void | Promise<void>)[] = [() => db.close()];
  const fail = async (error: unknown): Promise<never> => {
    for (const step of cleanup.reverse()) await step();
    throw error instanceof StartupError
      ? error
      : new StartupError((error as Error).message);
  };

  const envStore = new EnvironmentStore(dataDir);
  let adminKey: string;
  try {
    if (options.env !== undefined) envStore.update(options.env);
    envStore.list();
    adminKey = loadOrCreateAdminKey(dataDir, INSTANCE_NAME);
  } catch (error) {
    return fail(
      error instanceof EnvironmentError
        ? new StartupError(`${error.code}: ${error.message}`)
        : error,
    );
  }

  const runner = new FunctionRunner(db, {
    onRun: ({ udfType, path: fnPath, logLines, uncaughtError }) => {
      // The browser console's format (convex 1.48 `logging.ts`): "[CONVEX Q(messages:list)] [LOG] …".
      const prefix = `[CONVEX ${udfType[0].toUpperCase()}(${fnPath})]`;
      for (const line of logLines) logger.info(`${prefix} ${line}`);
      if (uncaughtError !== undefined)
        logger.error(`${prefix} ${uncaughtError}`);
    },
  });
  const scheduler = new Scheduler(db, runner, { clock: options.clock });
  cleanup.push(() => scheduler.close());
  const crons = new CronRunner(runner, { clock: options.clock, logger });
  cleanup.push(() => crons.close());
  let siteUrl: string | null = null;
  let url = "";
  const files = FileStorage.open({
    db,
    dataDir,
    exclusive: (task) => runner.exclusive(() => Promise.resolve().then(task)),
    origin: () => url,
  });
  const convex = createSyscalls({
    db,
    nested: runner.nested,
    extensions: [files.syscalls, scheduler.syscalls, vectorSearchSyscalls(db)],
  });
  // Keys of Convex Auth live on this backend's own site port: ask the router
  // directly (no socket, and never from inside an executor slot, so an HTTP
  // action that runs a query cannot wait on the verification waiting on it).
  const authFetch: AuthFetch = (target) =>
    siteUrl !== null && new URL(target).origin === new URL(siteUrl).origin
      ? runner.runHttpAction(
          new Request(target, { headers: { accept: "application/json" } }),
        )
      : networkFetch(target);
  const authenticator = new Authenticator(
    new TokenVerifier({ fetch: authFetch }),
    adminKey,
  );
  const onStrayLog = (level: LogLevel, line: string) =>
    logger.info(`[${level}] ${line}`);
  const nodeRuntime = new NodeRuntime({
    convex,
    onStrayLog,
    ...options.nodeActions,
  });
  cleanup.push(() => nodeRuntime.close());
  type Build = {
    bundle: FunctionsBundle;
    /** The workers of the bundle's `"use node"` modules, if it has any. */
    node: NodeGeneration | null;
    isolate: Isolate;
    providers: AuthProvider[];
  };
  let current: Build | null = null;
  const deploymentEnv = (): Record<string, string> => ({
    ...envStore.list(),
    CONVEX_CLOUD_URL: url,
    ...(siteUrl === null ? {} : { CONVEX_SITE_URL: siteUrl }),
  });
  /**
   * Evaluates a bundle under the current environment variables: module top
   * level and `auth.config.ts` see them, as on Convex.
   */
  const instantiate = (
    bundle: FunctionsBundle,
    node: NodeGeneration | null,
  ): Build => {
    const env = deploymentEnv();
    // A Node action in a component sees what its parent passed, as in the isolate.
    const envOf = (componentPath: string) =>
      componentPath === ""
        ? env
        : (isolate.components.get(componentPath)?.env ?? {});
    const isolate: Isolate = createIsolate(bundle, {
      convex,
      env,
      onStrayLog,
      ...(node === null
        ? {}
        : { node: { modules: node.modules(envOf), bundle: node.bundle } }),
    });
    return {
      bundle,
      node,
      isolate,
      providers: parseAuthConfig(isolate.authConfig),
    };
  };
  /** Builds and evaluates the functions; no effect on what is being served. */
  const build = async (): Promise<Build> => {
    const bundle = await buildFunctions(functionsDir);
    // An edit that leaves the Node modules alone keeps their workers.
    const kept =
      bundle.node !== null && current?.node?.serves(bundle.node) === true
        ? current.node
        : null;
    const node =
      bundle.node === null
        ? null
        : (kept ?? (await nodeRuntime.prepare(bundle.node, deploymentEnv())));
    try {
      return instantiate(bundle, node);
    } catch (error) {
      if (node !== kept) node?.retire();
      throw error;
    }
  };
  /**
   * Switches to a new build between two functions (an executor slot), so no
   * query or mutation spans the switch: none can cache an old-code result
   * after the cache is cleared, or commit under a schema that was just checked.
   * The replaced build's Node workers finish their calls and go.
   */
  const install = async (next: Build) => {
    const { isolate } = next;
    const previous = current;
    try {
      // Backfills and schema checks run before the switch, yielding to the
      // event loop, so the executor keeps serving the old build meanwhile.
      await db.prepareSchema(isolate.schema);
    } catch (error) {
      if (next.node !== previous?.node) next.node?.retire();
      throw error;
    }
    await runner.install(isolate, () => {
      db.setSchema(isolate.schema);
      authenticator.verifier.setProviders(next.providers);
      current = next;
      hub.invalidateAll();
    });
    if (previous !== null && previous.node !== next.node)
      previous.node?.retire();
    try {
      await crons.sync(isolate.modules.crons?.default);
    } catch (error) {
      logger.error(`Cron jobs not updated: ${(error as Error).message}`);
    }
  };

  const hub = new SubscriptionHub(db, runner);
  cleanup.push(() => hub.close());
  cleanup.push(() => runner.close());
  const api = createApiServer({
    hub,
    runner,
    authenticator,
    instanceName: INSTANCE_NAME,
    loopbackOnly: LOOPBACK.has(host),
    files,
    sync: options.sync,
  });
  const closeSockets = () => api.closeSockets();
  let port: number;
  try {
    port = await listen(api.server, options.port ?? 3210, host, "--port");
  } catch (error) {
    return fail(error);
  }
  cleanup.push(() => closeServer(api.server, closeSockets));
  const urlHost = host.includes(":") ? `[${host}]` : host;
  url = `http://${urlHost}:${port}`;
  const sitePort = options.sitePort === undefined ? 3211 : options.sitePort;
  if (sitePort !== null) {
    const site = createSiteServer({
      runner,
      authenticator,
      loopbackOnly: LOOPBACK.has(host),
    });
    try {
      const actualSitePort = await listen(site, sitePort, host, "--site-port");
      siteUrl = `http://${urlHost}:${actualSitePort}`;
    } catch (error) {
      return fail(error);
    }
    cleanup.push(() => closeServer(site, () => undefined));
  }

  try {
    await options.onListening?.({ url, siteUrl });
    await install(await build());
    await scheduler.start();
  } catch (error) {
    return fail(error);
  }

  let reloading: Promise<boolean> = Promise.resolve(true);
  /** Rebuilds (new code) or re-evaluates the last build (new environment), one at a time. */
  const reinstall = (
    next: () => Promise<Build>,
    done: string,
  ): Promise<boolean> => {
    reloading = reloading.then(async () => {
      try {
        await install(await next());
        logger.info(done);
        return true;
      } catch (error) {
        logger.error(
          `${(error as Error).message}\nStill serving the last good build.`,
        );
        return false;
      }
    });
    return reloading;
  };
  const reload = () => reinstall(build, "Reloaded functions");
  if (options.watch ?? true) {
    const stop = watchFunctions(functionsDir, () => void reload());
    cleanup.push(stop);
  }
  // Environment changes (`npm run backend -- env set`, from any process) apply
  // to the next function run; cached query results are dropped, as a change
  // to Convex's `_environment_variables` invalidates the queries that read it.
  cleanup.push(
    envStore.watch(
      () =>
        void reinstall(
          () => Promise.resolve(instantiate(current!.bundle, current!.node)),
          "Environment variables changed; reloaded functions",
        ),
      (error) =>
        logger.error(`Cannot read environment variables: ${error.message}`),
    ),
  );

  let closing: Promise<void> | null = null;
  return {
    url,
    siteUrl,
    port,
    adminKey,
    reload,
    close() {
      closing ??= (async () => {
        for (const step of cleanup.reverse()) await step();
      })();
      return closing;
    },
  };
}

function listen(
  server: http.Server,
  port: number,
  host: string,
  flag: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      reject(
        new StartupError(
          error.code === "EADDRINUSE"
            ? `Port ${port} is in use on ${host}; stop the other process or pass ${flag} <port>`
            : error.code === "EACCES"
              ? `Not allowed to listen on ${host}:${port}; pass ${flag} with a port above 1023`
              : `Cannot listen on ${host}:${port}: ${error.message}`,
        ),
      );
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(
  server: http.Server,
  closeSockets: () => void,
): Promise<void> {
  closeSockets();
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
