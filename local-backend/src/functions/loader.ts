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
 * Usage:
 *   const bundle = await buildFunctions(functionsDir);
 *   const stop = watchFunctions(functionsDir, () => reload());
 */
import fs from "node:fs";
import path from "node:path";
import * as esbuild from "esbuild";
import type { Bundle } from "./isolate.ts";

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
 * CLI's `ComponentDefinitionPath`; the app is "") and `__convexApp`.
 */
export async function buildFunctions(functionsDir: string): Promise<Bundle> {
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
  let next = 0;
  for (const [key, dir] of definitionDirs) {
    const entries = findEntryPoints(dir).map((rel) => ({
      rel,
      id: `m${next++}`,
    }));
    for (const { rel, id } of entries)
      lines.push(
        `import * as ${id} from ${JSON.stringify(path.join(dir, rel))};`,
      );
    const schemaFile = ["schema.ts", "schema.js"].find((f) =>
      fs.existsSync(path.join(dir, f)),
    );
    const schemaId = `s${next++}`;
    if (schemaFile !== undefined)
      lines.push(
        `import ${schemaId} from ${JSON.stringify(path.join(dir, schemaFile))};`,
      );
    definitions.push(
      `${JSON.stringify(key)}: { modules: {${entries.map(({ rel, id }) => `${JSON.stringify(moduleName(rel))}: ${id}`).join(", ")}}, schema: ${schemaFile !== undefined ? schemaId : "undefined"} }`,
    );
  }
  if (appConfig !== undefined)
    lines.push(`import app from ${JSON.stringify(appConfig)};`);
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
      target: "esnext",
      jsx: "automatic",
      conditions: ["convex", "module"],
      outfile: filename,
      write: false,
      sourcemap: "external",
      keepNames: true,
      define: { "process.env.NODE_ENV": '"production"' },
      logLevel: "silent",
    });
  } catch (error) {
    throw buildError(error);
  }
  const code = result.outputFiles.find((f) => f.path.endsWith(".js"))!.text;
  const sourceMap = result.outputFiles.find((f) =>
    f.path.endsWith(".map"),
  )!.text;
  return { code, sourceMap, filename, sourceRoot };
}

function buildError(error: unknown): unknown {
  const failure = error as esbuild.BuildFailure;
  if (!Array.isArray(failure.errors)) return error;
  // One line per error, "file:line:column: text", so the first line of the
  // message already says what to fix (the CLI prints it as is).
  const lines = failure.errors.map((e) =>
    e.location === null
      ? e.text
      : `${e.location.file}:${e.location.line}:${e.location.column + 1}: ${e.text}`,
  );
  return new BuildError(`Failed to build the functions: ${lines.join("\n")}`);
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
    throw buildError(error);
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
