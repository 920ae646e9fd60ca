/**
 * Finds and bundles the app's `convex/` folder (modules, `schema.ts`,
 * `auth.config.ts`), and watches it for changes.
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
    if (rel !== "" && fs.existsSync(path.join(dir, "convex.config.ts"))) return;
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

/** Bundles every entry point (and `schema.ts`) into one script for the isolate. */
export async function buildFunctions(functionsDir: string): Promise<Bundle> {
  const absDir = path.resolve(functionsDir);
  if (!fs.existsSync(absDir) || !fs.statSync(absDir).isDirectory()) {
    throw new BuildError(
      `Functions folder ${absDir} does not exist; pass --functions <dir>`,
    );
  }
  const entries = findEntryPoints(absDir);
  const schemaFile = ["schema.ts", "schema.js"].find((f) =>
    fs.existsSync(path.join(absDir, f)),
  );
  const lines = entries.map(
    (rel, i) => `import * as m${i} from ${JSON.stringify(`./${rel}`)};`,
  );
  if (schemaFile !== undefined)
    lines.push(`import schema from ${JSON.stringify(`./${schemaFile}`)};`);
  // Read at push by the Convex CLI; here with the rest, under the deployment's env.
  const authConfigFile = ["auth.config.ts", "auth.config.js"].find((f) =>
    fs.existsSync(path.join(absDir, f)),
  );
  if (authConfigFile !== undefined)
    lines.push(
      `import authConfig from ${JSON.stringify(`./${authConfigFile}`)};`,
      `globalThis.__convexAuthConfig = authConfig;`,
    );
  lines.push(
    `globalThis.__convexModules = {${entries.map((rel, i) => `${JSON.stringify(moduleName(rel))}: m${i}`).join(", ")}};`,
    `globalThis.__convexSchema = ${schemaFile !== undefined ? "schema" : "undefined"};`,
  );
  const sourceRoot = path.dirname(absDir);
  const filename = path.join(sourceRoot, ".convex-local-bundle.js");
  let result: esbuild.BuildResult & { outputFiles: esbuild.OutputFile[] };
  try {
    result = await esbuild.build({
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
    const failure = error as esbuild.BuildFailure;
    if (!Array.isArray(failure.errors)) throw error;
    // One line per error, "file:line:column: text", so the first line of the
    // message already says what to fix (the CLI prints it as is).
    const lines = failure.errors.map((e) =>
      e.location === null
        ? e.text
        : `${e.location.file}:${e.location.line}:${e.location.column + 1}: ${e.text}`,
    );
    throw new BuildError(`Failed to build the functions: ${lines.join("\n")}`);
  }
  const code = result.outputFiles.find((f) => f.path.endsWith(".js"))!.text;
  const sourceMap = result.outputFiles.find((f) =>
    f.path.endsWith(".map"),
  )!.text;
  return { code, sourceMap, filename, sourceRoot };
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
