/**
 * Finds and bundles the app's `convex/` folder, and watches it for changes.
 *
 * Entry points follow the Convex CLI's rules (convex 1.48 `bundler/index.ts`
 * `entryPoints()`); the bundle uses the CLI's esbuild settings for the isolate
 * runtime (platform "browser", conditions "convex" and "module"), so import
 * resolution matches a real deploy. Unlike the CLI, all modules go into one
 * script: the vm context has no module linker, and one bundle gives modules
 * shared state as `splitting: true` chunks do on Convex.
 *
 * Modules whose first statement is the `"use node"` directive go into a second
 * bundle, for Node (platform "node", ES module, run by nodeRuntime.ts), as the
 * CLI splits them (`entryPointsByEnvironment`); the packages `convex.json`
 * lists in `node.externalPackages` stay outside it, imported by absolute path
 * from the project's `node_modules` (the CLI's `createExternalPlugin` and
 * `computeExternalPackages`).
 *
 * Usage:
 *   const bundle = await buildFunctions(functionsDir);
 *   const stop = watchFunctions(functionsDir, () => reload());
 */
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import type { Bundle } from "./isolate.ts";
import type { NodeBundle } from "./nodeRuntime.ts";

/** What the isolate bundle and the Node bundle share (the CLI builds both alike). */
const SHARED_BUILD_OPTIONS = {
  target: "esnext",
  jsx: "automatic",
  conditions: ["convex", "module"],
  write: false,
  sourcemap: "external",
  keepNames: true,
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "silent",
} as const satisfies esbuild.BuildOptions;

/** What `buildFunctions` produces: the isolate's bundle, and the Node one if any module is `"use node"`. */
export type FunctionsBundle = Bundle & { node: NodeBundle | null };

const ENTRY_POINT_EXTENSIONS = [
  ".js",
  ".mjs",
  ".cjs",
  ".ts",
  ".tsx",
  ".mts",
  ".cts",
  ".jsx",
];
const WATCH_DEBOUNCE_MS = 80;
const DEFINITION_FILES = ["convex.config.ts", "convex.config.js"];
const COMPONENT_NAMESPACE = "convex-component-definition";
/** The CLI matches definition imports loosely too (convex 1.48 `componentPlugin`). */
const DEFINITION_IMPORT = /convex\.config/;

export class BuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BuildError";
  }
}

/** Entry points relative to `functionsDir`, with "/" separators, sorted. */
export function findEntryPoints(functionsDir: string): string[] {
  const found: string[] = [];
  const walk = (dir: string, rel: string) => {
    // A directory with its own definition is a component, bundled on its own
    // (convex 1.48 `isComponentDirectory` looks for .ts, then .js).
    if (rel !== "" && definitionFile(dir) !== undefined) return;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const relPath = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) {
        if (
          relPath === "_generated" ||
          relPath === "node_modules" ||
          entry.name.startsWith(".")
        )
          continue;
        if (relPath === "_deps") {
          throw new BuildError(
            `${path.join(dir, entry.name)} is within the "_deps" directory, which is reserved for dependencies. Please move your code to another directory.`,
          );
        }
        walk(path.join(dir, entry.name), relPath);
        continue;
      }
      if (isEntryPoint(relPath, path.join(dir, entry.name)))
        found.push(relPath);
    }
  };
  walk(functionsDir, "");
  return found.sort();
}

function isEntryPoint(relPath: string, absPath: string): boolean {
  const base = path.posix.basename(relPath);
  if (!ENTRY_POINT_EXTENSIONS.some((ext) => relPath.endsWith(ext)))
    return false;
  if (base.startsWith(".") || base.startsWith("#")) return false;
  if (base === "schema.ts" || base === "schema.js") return false;
  // Two or more dots: `auth.config.ts`, `*.test.ts`, `crons.foo.ts`.
  if ((base.match(/\./g) ?? []).length > 1) return false;
  if (relPath.includes(" ")) return false;
  // A TypeScript file with no import or export is not a module (the CLI skips it too).
  if (
    (relPath.endsWith(".ts") || relPath.endsWith(".tsx")) &&
    !/^\s{0,100}(import|export)/m.test(fs.readFileSync(absPath, "utf8"))
  ) {
    return false;
  }
  return true;
}

/**
 * Whether the file's directive prologue holds `"use node"` (the CLI reads
 * `ast.program.directives` through Babel; a directive is a string-literal
 * statement before any other statement).
 */
export function hasUseNodeDirective(source: string): boolean {
  if (!source.includes("use node")) return false;
  let i = source.startsWith("#!")
    ? source.indexOf("\n") + 1 || source.length
    : 0;
  const skipTrivia = (from: number, newlines: boolean): number => {
    let at = from;
    for (;;) {
      const char = source[at];
      if (
        char === " " ||
        char === "\t" ||
        char === "\r" ||
        (newlines && char === "\n") ||
        char === "\uFEFF"
      )
        at++;
      else if (source.startsWith("/*", at)) {
        const end = source.indexOf("*/", at + 2);
        if (end === -1) return source.length;
        at = end + 2;
      } else if (source.startsWith("//", at)) {
        if (!newlines) return at;
        const end = source.indexOf("\n", at);
        at = end === -1 ? source.length : end;
      } else return at;
    }
  };
  for (;;) {
    i = skipTrivia(i, true);
    const quote = source[i];
    if (quote !== '"' && quote !== "'") return false;
    let end = i + 1;
    while (end < source.length && source[end] !== quote && source[end] !== "\n")
      end += source[end] === "\\" ? 2 : 1;
    if (source[end] !== quote) return false;
    const value = source.slice(i + 1, end);
    // A directive is the whole statement: `"use node".length` is not one.
    const next = skipTrivia(end + 1, false);
    const after = source[next];
    if (
      after !== undefined &&
      after !== ";" &&
      after !== "\n" &&
      !source.startsWith("//", next)
    )
      return false;
    if (value === "use node") return true;
    i = after === ";" ? next + 1 : next;
  }
}

/** Modules that must run in the isolate (the CLI's `mustBeIsolate`). */
function mustBeIsolate(relPath: string): boolean {
  return ["http", "crons", "schema", "auth.config"].includes(
    moduleName(relPath),
  );
}

/** The module name a function path uses: "dir/file.ts" → "dir/file". */
export function moduleName(relPath: string): string {
  return relPath.replace(/\.[^./]+$/, "");
}

/** `convex.config.ts` (or `.js`) in `dir`, if it is a component definition directory. */
function definitionFile(dir: string): string | undefined {
  return DEFINITION_FILES.map((f) => path.join(dir, f)).find((f) =>
    fs.existsSync(f),
  );
}

/**
 * Bundles every entry point (and `schema.ts`) of the app and of every
 * component its `convex.config.ts` installs, at any depth, into one script for
 * the isolate. The script assigns `globalThis.__convexDefinitions` (modules
 * and schema per definition directory, relative to the app's folder as the
 * CLI's `ComponentDefinitionPath`; the app is "") and `__convexApp`, and
 * `__convexAuthConfig` from the app's `auth.config.ts`.
 */
export async function buildFunctions(
  functionsDir: string,
): Promise<FunctionsBundle> {
  const absDir = path.resolve(functionsDir);
  if (!fs.existsSync(absDir) || !fs.statSync(absDir).isDirectory()) {
    throw new BuildError(
      `Functions folder ${absDir} does not exist; pass --functions <dir>`,
    );
  }
  const sourceRoot = path.dirname(absDir);
  const appConfig = definitionFile(absDir);
  const definitionDirs = new Map<string, string>([["", absDir]]);
  if (appConfig !== undefined) {
    for (const file of await discoverDefinitions(appConfig, sourceRoot)) {
      const dir = path.dirname(file);
      if (dir !== absDir) definitionDirs.set(definitionPath(absDir, dir), dir);
    }
  }
  const lines: string[] = [];
  const definitions: string[] = [];
  const nodeLines: string[] = [];
  const nodeDefinitions: string[] = [];
  let next = 0;
  for (const [key, dir] of definitionDirs) {
    const entries: Entry[] = [];
    const nodeEntries: Entry[] = [];
    for (const rel of findEntryPoints(dir)) {
      if (!hasUseNodeDirective(fs.readFileSync(path.join(dir, rel), "utf8"))) {
        entries.push({ rel, id: `m${next++}` });
        continue;
      }
      if (mustBeIsolate(rel))
        throw new BuildError(`"use node" directive is not allowed for ${rel}.`);
      nodeEntries.push({ rel, id: `n${next++}` });
    }
    if (nodeEntries.length > 0) {
      nodeLines.push(...importLines(dir, nodeEntries));
      nodeDefinitions.push(`${JSON.stringify(key)}: ${moduleMap(nodeEntries)}`);
    }
    lines.push(...importLines(dir, entries));
    const schemaFile = ["schema.ts", "schema.js"].find((f) =>
      fs.existsSync(path.join(dir, f)),
    );
    const schemaId = `s${next++}`;
    if (schemaFile !== undefined)
      lines.push(
        `import ${schemaId} from ${JSON.stringify(path.join(dir, schemaFile))};`,
      );
    definitions.push(
      `${JSON.stringify(key)}: { modules: ${moduleMap(entries)}, schema: ${schemaFile !== undefined ? schemaId : "undefined"} }`,
    );
  }
  if (appConfig !== undefined)
    lines.push(`import app from ${JSON.stringify(appConfig)};`);
  // Read at push by the Convex CLI; here with the rest, under the deployment's env.
  const authConfigFile = ["auth.config.ts", "auth.config.js"].find((f) =>
    fs.existsSync(path.join(absDir, f)),
  );
  if (authConfigFile !== undefined)
    lines.push(
      `import authConfig from ${JSON.stringify(path.join(absDir, authConfigFile))};`,
      `globalThis.__convexAuthConfig = authConfig;`,
    );
  lines.push(
    `globalThis.__convexDefinitions = {${definitions.join(", ")}};`,
    `globalThis.__convexApp = ${appConfig !== undefined ? "app" : "undefined"};`,
  );
  const filename = path.join(sourceRoot, ".convex-local-bundle.js");
  let result: esbuild.BuildResult & { outputFiles: esbuild.OutputFile[] };
  try {
    result = await esbuild.build({
      plugins: [componentImports(absDir)],
      stdin: {
        contents: lines.join("\n"),
        resolveDir: absDir,
        sourcefile: "local-backend-entry.js",
        loader: "js",
      },
      absWorkingDir: sourceRoot,
      bundle: true,
      platform: "browser",
      format: "iife",
      outfile: filename,
      ...SHARED_BUILD_OPTIONS,
    });
  } catch (error) {
    throw buildError(error, "browser");
  }
  const code = result.outputFiles.find((f) => f.path.endsWith(".js"))!.text;
  const sourceMap = result.outputFiles.find((f) =>
    f.path.endsWith(".map"),
  )!.text;
  const node =
    nodeLines.length === 0
      ? null
      : await buildNodeFunctions(
          [
            ...nodeLines,
            `export const definitions = {${nodeDefinitions.join(", ")}};`,
          ].join("\n"),
          absDir,
          sourceRoot,
        );
  return { code, sourceMap, filename, sourceRoot, node };
}

type Entry = { rel: string; id: string };

function importLines(dir: string, entries: Entry[]): string[] {
  return entries.map(
    ({ rel, id }) =>
      `import * as ${id} from ${JSON.stringify(path.join(dir, rel))};`,
  );
}

/** `{"dir/file": m3, ...}`: module names to their namespace imports. */
function moduleMap(entries: Entry[]): string {
  return `{${entries.map(({ rel, id }) => `${JSON.stringify(moduleName(rel))}: ${id}`).join(", ")}}`;
}

/** The `"use node"` modules as one ES module for Node (the CLI's `platform: "node"` bundle). */
async function buildNodeFunctions(
  contents: string,
  functionsDir: string,
  sourceRoot: string,
): Promise<NodeBundle> {
  let result: esbuild.BuildResult & { outputFiles: esbuild.OutputFile[] };
  try {
    result = await esbuild.build({
      plugins: [nodeExternals(externalPackages(sourceRoot))],
      stdin: {
        contents,
        resolveDir: functionsDir,
        sourcefile: "local-backend-node-entry.js",
        loader: "js",
      },
      absWorkingDir: sourceRoot,
      bundle: true,
      platform: "node",
      format: "esm",
      outfile: path.join(sourceRoot, ".convex-local-node-bundle.mjs"),
      ...SHARED_BUILD_OPTIONS,
    });
  } catch (error) {
    throw buildError(error, "node");
  }
  return {
    code: result.outputFiles.find((f) => f.path.endsWith(".mjs"))!.text,
    sourceMap: result.outputFiles.find((f) => f.path.endsWith(".map"))!.text,
    sourceRoot,
    requireFrom: path.join(functionsDir, "_node.js"),
  };
}

/**
 * The packages to leave out of the Node bundle, by name, with the folder
 * each is installed in: those `convex.json` lists in `node.externalPackages`
 * ("*" for all) among the dependencies of the project's `package.json`,
 * except `convex` and local or URL versions (the CLI's `shouldMarkExternal`).
 */
function externalPackages(sourceRoot: string): Map<string, string> {
  const found = new Map<string, string>();
  const configFile = path.join(sourceRoot, "convex.json");
  if (!fs.existsSync(configFile)) return found;
  const config = readJson(configFile) as {
    node?: { externalPackages?: unknown };
  };
  const allowed = config.node?.externalPackages ?? [];
  if (!Array.isArray(allowed) || allowed.some((p) => typeof p !== "string"))
    throw new BuildError(
      `${configFile}: node.externalPackages must be an array of package names`,
    );
  if (allowed.length === 0) return found;
  let dir = sourceRoot;
  while (!fs.existsSync(path.join(dir, "package.json"))) {
    const parent = path.dirname(dir);
    if (parent === dir) return found;
    dir = parent;
  }
  const packageJson = readJson(path.join(dir, "package.json")) as Record<
    string,
    Record<string, unknown> | undefined
  >;
  for (const key of [
    "dependencies",
    "devDependencies",
    "peerDependencies",
    "optionalDependencies",
  ]) {
    for (const [name, version] of Object.entries(packageJson[key] ?? {})) {
      if (found.has(name) || name === "convex" || typeof version !== "string")
        continue;
      if (
        /^(file:|git\+file:|https?:|git:|git\+ssh:|git\+https?:)/.test(version)
      )
        continue;
      if (!allowed.includes(name) && !allowed.includes("*")) continue;
      const installed = path.join(dir, "node_modules", name);
      if (fs.existsSync(installed)) found.set(name, fs.realpathSync(installed));
    }
  }
  return found;
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (error) {
    throw new BuildError(
      `Couldn't parse "${file}". Make sure it's a valid JSON. Error: ${String(error)}`,
    );
  }
}

/**
 * Marks imports of external packages external, by absolute location (a
 * `file:` URL for `import`, a path for `require`), so the bundle can run from
 * a temporary folder and still load the project's installed copy. Only an
 * import that resolves into the listed package's folder is external, as in
 * the CLI's `createExternalPlugin`.
 */
function nodeExternals(externals: Map<string, string>): esbuild.Plugin {
  return {
    name: "local-backend-node-externals",
    setup(build) {
      if (externals.size === 0) return;
      build.onResolve({ filter: /^[^./]/, namespace: "file" }, async (args) => {
        if (args.pluginData !== undefined) return undefined;
        const parts = args.path.split("/");
        const name = args.path.startsWith("@")
          ? parts.slice(0, 2).join("/")
          : parts[0];
        const dir = externals.get(name);
        if (dir === undefined) return undefined;
        const resolved = await build.resolve(args.path, {
          kind: args.kind,
          resolveDir: args.resolveDir,
          pluginData: { externalLookup: true },
        });
        if (
          resolved.errors.length > 0 ||
          !resolved.path.startsWith(dir + path.sep)
        )
          return undefined;
        return {
          path:
            args.kind === "require-call" || args.kind === "require-resolve"
              ? resolved.path
              : pathToFileURL(resolved.path).href,
          external: true,
        };
      });
    },
  };
}

/** The CLI's hint when the isolate bundle meets Node APIs (convex 1.48 `bundler/index.ts` `doEsbuild`). */
const USE_NODE_HINT =
  `\nIt looks like you are using Node APIs from a file without the "use node" directive.\n` +
  `Split out actions using Node.js APIs like this into a new file only containing actions that uses "use node" ` +
  `so these actions will run in a Node.js environment.\n` +
  `For more information see https://docs.convex.dev/functions/runtimes#nodejs-runtime\n`;

function buildError(error: unknown, platform: "browser" | "node"): unknown {
  const failure = error as esbuild.BuildFailure;
  if (!Array.isArray(failure.errors)) return error;
  // One line per error, "file:line:column: text", so the first line of the
  // message already says what to fix (the CLI prints it as is).
  const lines = failure.errors.map((e) =>
    e.location === null
      ? e.text
      : `${e.location.file}:${e.location.line}:${e.location.column + 1}: ${e.text}`,
  );
  const forNode =
    platform === "browser" &&
    failure.errors.some((e) =>
      e.notes.some((note) =>
        note.text.includes("Are you trying to bundle for node?"),
      ),
    );
  return new BuildError(
    `Failed to build the functions: ${lines.join("\n")}${forNode ? USE_NODE_HINT : ""}`,
  );
}

/** The CLI's `ComponentDefinitionPath`: the definition's folder relative to the app's, POSIX separators. */
function definitionPath(appDir: string, dir: string): string {
  return path.relative(appDir, dir).split(path.sep).join(path.posix.sep);
}

/**
 * Where a `convex.config` import points, trying the extensions the CLI tries
 * (convex 1.48 `componentPlugin`), or undefined if it is not a definition.
 */
async function resolveDefinition(
  build: esbuild.PluginBuild,
  args: esbuild.OnResolveArgs,
): Promise<string | undefined> {
  const candidates = [args.path];
  const ext = path.extname(args.path);
  if (ext === ".js") candidates.push(`${args.path.slice(0, -3)}.ts`);
  if (ext !== ".js" && ext !== ".ts")
    candidates.push(`${args.path}.js`, `${args.path}.ts`);
  for (const candidate of candidates) {
    const result = await build.resolve(candidate, {
      kind: args.kind,
      resolveDir: args.resolveDir,
      pluginData: { definitionLookup: true },
    });
    if (result.errors.length === 0 && result.path !== "") {
      const base = path.basename(result.path);
      return DEFINITION_FILES.includes(base) ? result.path : undefined;
    }
  }
  return undefined;
}

/** Every definition file the app's `convex.config.ts` reaches, itself included (the CLI's "discover" pass). */
async function discoverDefinitions(
  appConfig: string,
  sourceRoot: string,
): Promise<string[]> {
  const found = new Set<string>([appConfig]);
  try {
    await esbuild.build({
      entryPoints: [appConfig],
      absWorkingDir: sourceRoot,
      bundle: true,
      write: false,
      platform: "browser",
      format: "esm",
      conditions: ["convex", "module"],
      logLevel: "silent",
      plugins: [
        {
          name: "discover-components",
          setup(build) {
            build.onResolve({ filter: DEFINITION_IMPORT }, async (args) => {
              if (args.kind === "entry-point" || args.pluginData !== undefined)
                return undefined;
              const file = await resolveDefinition(build, args);
              if (file !== undefined) found.add(file);
              return undefined;
            });
          },
        },
      ],
    });
  } catch (error) {
    throw buildError(error, "browser");
  }
  return [...found];
}

/**
 * Makes each imported component definition what the runtime `use()` expects
 * (convex 1.48 `ImportedComponentDefinition`: `componentDefinitionPath` and
 * `defaultName`, which the backend supplies on Convex), plus the definition
 * itself, so the app's tree can be read after evaluation.
 */
function componentImports(appDir: string): esbuild.Plugin {
  return {
    name: "component-definitions",
    setup(build) {
      build.onResolve({ filter: DEFINITION_IMPORT }, async (args) => {
        if (
          args.pluginData !== undefined ||
          args.namespace === COMPONENT_NAMESPACE ||
          args.importer.endsWith("local-backend-entry.js")
        )
          return undefined;
        const file = await resolveDefinition(build, args);
        return file === undefined
          ? undefined
          : { path: file, namespace: COMPONENT_NAMESPACE };
      });
      build.onLoad(
        { filter: /.*/, namespace: COMPONENT_NAMESPACE },
        (args) => ({
          contents: [
            `import definition from ${JSON.stringify(args.path)};`,
            `export default { componentDefinitionPath: ${JSON.stringify(definitionPath(appDir, path.dirname(args.path)))}, defaultName: definition._name, definition };`,
          ].join("\n"),
          resolveDir: path.dirname(args.path),
          loader: "js",
        }),
      );
    },
  };
}

/**
 * Calls `onChange` (debounced) whenever a file under `functionsDir` changes,
 * except in `_generated/`, whose churn follows codegen rather than edits.
 * Returns a function that stops watching.
 */
export function watchFunctions(
  functionsDir: string,
  onChange: () => void,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  const watcher = fs.watch(
    path.resolve(functionsDir),
    { recursive: true },
    (_event, file) => {
      if (
        file !== null &&
        (file.startsWith("_generated") || path.basename(file).startsWith("."))
      )
        return;
      clearTimeout(timer);
      timer = setTimeout(onChange, WATCH_DEBOUNCE_MS);
    },
  );
  watcher.on("error", () => undefined);
  return () => {
    clearTimeout(timer);
    watcher.close();
  };
}
