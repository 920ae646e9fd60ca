/**
 * Offline `_generated/` for apps with components (`npm run codegen`).
 *
 * `convex codegen` needs a deployment for an app with a `convex.config.ts`:
 * its typed output comes from the push response, which analyses every
 * component definition (convex 1.48 `cli/lib/components.ts`
 * `startComponentsPushAndCodegen`). Its hidden `--system-udfs` route needs
 * none, but ignores components (no `components` export). So:
 * - without `convex.config.ts`, this runs `convex codegen --system-udfs`;
 * - with one, it runs the CLI's own component codegen steps (the same
 *   functions from the installed `convex` package, so the files are the
 *   CLI's), feeding them the analysis the local backend computes by loading
 *   the app and its components as it would serve them.
 * Published components (`.js` definitions from npm) ship their own
 * `_generated/` and are left alone, as the CLI does.
 *
 * Usage:
 *   npx tsx local-backend/src/codegen.ts [--functions convex]
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import * as esbuild from "esbuild";
import type { ComponentInstance } from "./functions/components.ts";
import {
  createIsolate,
  type Isolate,
  type RegisteredFunction,
} from "./functions/isolate.ts";
import { buildFunctions } from "./functions/loader.ts";
import { NodeRuntime } from "./functions/nodeRuntime.ts";

const KEEP_INSTALLED = new Set(["esbuild", "prettier", "typescript"]);
/** Any property, call or `new` gives itself back; a string argument passes through (chalk). */
const INERT_MODULE = `
const handler = {
  get: (_, key) => (key === "__esModule" ? false : key === Symbol.toPrimitive ? () => "" : inert),
  apply: (_, __, args) => (typeof args[0] === "string" ? args[0] : inert),
  construct: () => inert,
};
const inert = new Proxy(function () {}, handler);
module.exports = inert;
`;
const CONVEX_PACKAGE = path.dirname(
  fileURLToPath(import.meta.resolve("convex/package.json")),
);

/** The CLI's internals this needs, from the installed convex 1.48. */
type CliModules = {
  codegen: {
    doInitialComponentCodegen(
      ctx: unknown,
      tmpDir: unknown,
      directory: ComponentDirectory,
      opts?: object,
    ): Promise<void>;
    doFinalComponentCodegen(
      ctx: unknown,
      tmpDir: unknown,
      root: ComponentDirectory,
      directory: ComponentDirectory,
      startPushResponse: unknown,
      components: Map<string, ComponentDirectory>,
      opts?: object,
    ): Promise<void>;
  };
  bundle: {
    componentGraph(
      ctx: unknown,
      absWorkingDir: string,
      root: ComponentDirectory,
      liveComponentSources: boolean,
      verbose: boolean,
    ): Promise<{ components: Map<string, ComponentDirectory> }>;
  };
  directory: {
    isComponentDirectory(
      ctx: unknown,
      dir: string,
      isRoot: boolean,
    ):
      | { kind: "ok"; component: ComponentDirectory }
      | { kind: "err"; why: string };
  };
  fs: {
    nodeFs: unknown;
    withTmpDir(callback: (tmpDir: unknown) => Promise<void>): Promise<void>;
  };
};

type ComponentDirectory = {
  isRoot: boolean;
  path: string;
  definitionPath: string;
};

/**
 * Loads the CLI's codegen modules from `convex/dist/esm`. They import the
 * CLI's own dependencies (chalk 5, ora, commander, sentry...), which the
 * published package bundles into `cli.bundle.cjs` rather than installing, so
 * they are bundled here with those packages replaced by an inert stand-in:
 * the code paths codegen takes never use them, and `esbuild`, `prettier` and
 * `typescript` stay the installed ones.
 */
async function loadCli(): Promise<CliModules> {
  const dist = (file: string) =>
    JSON.stringify(path.join(CONVEX_PACKAGE, "dist/esm", file));
  const result = await esbuild.build({
    stdin: {
      contents: [
        `export { doInitialComponentCodegen, doFinalComponentCodegen } from ${dist("cli/lib/codegen.js")};`,
        `export { componentGraph } from ${dist("cli/lib/components/definition/bundle.js")};`,
        `export { isComponentDirectory } from ${dist("cli/lib/components/definition/directoryStructure.js")};`,
        `export { nodeFs, withTmpDir } from ${dist("bundler/fs.js")};`,
      ].join("\n"),
      resolveDir: CONVEX_PACKAGE,
    },
    bundle: true,
    write: false,
    platform: "node",
    format: "esm",
    logLevel: "silent",
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    plugins: [
      {
        name: "cli-dependencies",
        setup(build) {
          build.onResolve({ filter: /^[^./]/ }, async (args) => {
            if (args.pluginData !== undefined || args.path.startsWith("node:"))
              return undefined;
            const resolved = await build.resolve(args.path, {
              kind: args.kind,
              resolveDir: args.resolveDir,
              pluginData: true,
            });
            if (resolved.errors.length > 0 || args.path === "chalk")
              return { path: args.path, namespace: "inert" };
            return KEEP_INSTALLED.has(args.path.split("/")[0])
              ? { path: resolved.path, external: true }
              : undefined;
          });
          build.onLoad({ filter: /.*/, namespace: "inert" }, (args) => ({
            // chalk 5's named exports, which `__toESM` cannot find on a Proxy.
            contents:
              args.path === "chalk"
                ? `${INERT_MODULE.replace("module.exports = inert;", "")}\nexport const chalkStderr = inert; export const chalkStdout = inert; export default inert;`
                : INERT_MODULE,
            loader: "js",
          }));
        },
      },
    ],
  });
  const file = path.join(
    fs.mkdtempSync(path.join(os.tmpdir(), "convex-codegen-")),
    "cli.mjs",
  );
  fs.writeFileSync(file, result.outputFiles[0].text);
  try {
    const cli = (await import(
      pathToFileURL(file).href
    )) as CliModules["codegen"] &
      CliModules["bundle"] &
      CliModules["directory"] &
      CliModules["fs"];
    return { codegen: cli, bundle: cli, directory: cli, fs: cli };
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
}

/** The CLI's `Context`, minus telemetry and login: a failure throws. */
function cliContext(nodeFs: unknown) {
  return {
    fs: nodeFs,
    deprecationMessagePrinted: false,
    spinner: undefined,
    crash: (args: { printedMessage: string | null }): Promise<never> =>
      Promise.reject(new Error(args.printedMessage ?? "codegen failed")),
    flushAndExit: (exitCode: number): Promise<never> =>
      Promise.reject(new Error(`codegen exited with ${exitCode}`)),
    registerCleanup: () => "cleanup",
    removeCleanup: () => null,
    bigBrainAuth: () => null,
    _updateBigBrainAuth: () => undefined,
  };
}

/**
 * The push response's `analysis` (convex 1.48 `deployApi/startPush.ts`) for
 * each definition: its functions, the public ones as its exports, its
 * children and declared environment.
 */
function analysisOf(
  instances: Iterable<ComponentInstance>,
): Record<string, unknown> {
  const analysis: Record<string, unknown> = {};
  for (const instance of instances) {
    if (instance.definitionPath in analysis) continue;
    const functions: Record<string, { functions: unknown[] }> = {};
    const exportsTree = new Map<string, unknown>();
    for (const [module, exports] of Object.entries(instance.modules)) {
      const analyzed: unknown[] = [];
      for (const [name, value] of Object.entries(exports)) {
        const fn = value as RegisteredFunction | null;
        if (fn === null || (typeof fn !== "object" && typeof fn !== "function"))
          continue;
        const udfType =
          fn.isQuery === true
            ? "Query"
            : fn.isMutation === true
              ? "Mutation"
              : fn.isAction === true
                ? "Action"
                : null;
        if (udfType === null) continue;
        analyzed.push({
          name,
          udfType,
          visibility: { kind: fn.isPublic === true ? "public" : "internal" },
          args: fn.exportArgs?.() ?? null,
          returns: fn.exportReturns?.() ?? null,
        });
        if (fn.isPublic === true) {
          addExport(
            exportsTree,
            [...module.split("/"), name],
            `_reference/function/${module}:${name}`,
          );
        }
      }
      functions[`${module}.js`] = { functions: analyzed };
    }
    const exported = (instance.definition?.export() ?? {}) as Record<
      string,
      unknown
    >;
    analysis[instance.definitionPath] = {
      definition: {
        path: instance.definitionPath,
        definitionType: exported.definitionType ?? { type: "app" },
        childComponents: exported.childComponents ?? [],
        httpMounts: exported.httpMounts ?? {},
        exports: serializeExports(exportsTree),
        envVars: exported.envVars ?? null,
      },
      schema: null,
      functions,
      udfConfig: null,
    };
  }
  return analysis;
}

function addExport(tree: Map<string, unknown>, parts: string[], leaf: string) {
  let node = tree;
  for (const part of parts.slice(0, -1)) {
    let next = node.get(part);
    if (!(next instanceof Map)) {
      next = new Map<string, unknown>();
      node.set(part, next);
    }
    node = next as Map<string, unknown>;
  }
  node.set(parts.at(-1)!, leaf);
}

function serializeExports(tree: Map<string, unknown>): unknown {
  return {
    type: "branch",
    branch: [...tree].map(([name, child]) => [
      name,
      child instanceof Map
        ? serializeExports(child as Map<string, unknown>)
        : { type: "leaf", leaf: child },
    ]),
  };
}

async function componentCodegen(functionsDir: string): Promise<void> {
  const cli = await loadCli();
  const ctx = cliContext(cli.fs.nodeFs);
  const checked = cli.directory.isComponentDirectory(ctx, functionsDir, true);
  if (checked.kind === "err") throw new Error(checked.why);
  const root = checked.component;
  const { components } = await cli.bundle.componentGraph(
    ctx,
    process.cwd(),
    root,
    false,
    false,
  );
  const others = [...components.values()].filter((d) => !d.isRoot);
  // Stubs first, so that every component's code can be bundled and analysed.
  await cli.fs.withTmpDir(async (tmpDir) => {
    await cli.codegen.doInitialComponentCodegen(ctx, tmpDir, root);
    for (const directory of others)
      await cli.codegen.doInitialComponentCodegen(ctx, tmpDir, directory);
  });
  const convex = {
    syscall: () => {
      throw new Error("codegen runs no functions");
    },
    asyncSyscall: () => Promise.reject(new Error("codegen runs no functions")),
    jsSyscall: () => {
      throw new Error("codegen runs no functions");
    },
  };
  const bundle = await buildFunctions(functionsDir);
  // `"use node"` modules are analysed in a worker, as the backend loads them.
  const nodeRuntime = new NodeRuntime({ convex, onStrayLog: () => undefined });
  let isolate: Isolate;
  try {
    const node =
      bundle.node === null ? null : await nodeRuntime.prepare(bundle.node, {});
    isolate = createIsolate(bundle, {
      convex,
      env: {},
      onStrayLog: () => undefined,
      ...(node === null
        ? {}
        : { node: { modules: node.modules(() => ({})), bundle: node.bundle } }),
    });
  } finally {
    await nodeRuntime.close();
  }
  const startPushResponse = {
    analysis: analysisOf(isolate.components.instances()),
  };
  await cli.fs.withTmpDir(async (tmpDir) => {
    for (const directory of [root, ...others]) {
      await cli.codegen.doFinalComponentCodegen(
        ctx,
        tmpDir,
        root,
        directory,
        startPushResponse,
        components,
      );
    }
  });
}

async function main(): Promise<void> {
  const flag = process.argv.indexOf("--functions");
  const functionsDir = path.resolve(
    flag === -1 ? "convex" : (process.argv[flag + 1] ?? "convex"),
  );
  // The CLI resolves the functions folder from the working directory.
  process.chdir(path.dirname(functionsDir));
  const hasConfig = ["convex.config.ts", "convex.config.js"].some((f) =>
    fs.existsSync(path.join(functionsDir, f)),
  );
  if (!hasConfig) {
    await promisify(execFile)(
      process.execPath,
      [
        path.join(CONVEX_PACKAGE, "bin/main.js"),
        "codegen",
        "--system-udfs",
        "--typecheck",
        "disable",
      ],
      { env: process.env },
    );
    return;
  }
  await componentCodegen(functionsDir);
}

main().catch((error: unknown) => {
  console.error((error as Error).message);
  process.exit(1);
});
