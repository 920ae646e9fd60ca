/**
 * Offline codegen: `npm run codegen` (local-backend/src/codegen.ts) relies on
 * the Convex CLI's hidden `--system-udfs` flag for an app without components
 * (the only codegen path that needs no deployment, spec §5.1), and on the
 * CLI's own component codegen steps fed with the local backend's analysis for
 * an app with a `convex.config.ts`. These tests notice if a convex upgrade
 * breaks either, and that the committed `_generated/` folders match what it
 * produces.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, test } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");
const CONVEX_CLI = path.join(ROOT, "node_modules/convex/bin/main.js");
const CODEGEN_SCRIPT = path.join(ROOT, "local-backend/src/codegen.ts");
const TSX_CLI = path.join(ROOT, "node_modules/tsx/dist/cli.mjs");
const COMPONENTS_FIXTURE = path.join(
  ROOT,
  "local-backend/test/fixture-components/convex",
);
const run = promisify(execFile);

const tempDirs: string[] = [];
afterEach(() => {
  for (const dir of tempDirs.splice(0))
    fs.rmSync(dir, { recursive: true, force: true });
});

/** A throwaway app holding a copy of `functionsDir` without its `_generated/`. */
function copyApp(functionsDir: string): string {
  const app = fs.mkdtempSync(path.join(os.tmpdir(), "codegen-"));
  tempDirs.push(app);
  fs.cpSync(functionsDir, path.join(app, "convex"), {
    recursive: true,
    filter: (source) => !source.includes(`${path.sep}_generated`),
  });
  const { version } = JSON.parse(
    fs.readFileSync(
      path.join(ROOT, "node_modules/convex/package.json"),
      "utf8",
    ),
  ) as { version: string };
  fs.symlinkSync(
    path.join(ROOT, "node_modules"),
    path.join(app, "node_modules"),
    "dir",
  );
  fs.writeFileSync(
    path.join(app, "package.json"),
    JSON.stringify({
      name: "codegen-check",
      private: true,
      dependencies: { convex: version },
    }),
  );
  return app;
}

async function codegen(app: string): Promise<void> {
  await run(
    process.execPath,
    [CONVEX_CLI, "codegen", "--system-udfs", "--typecheck", "disable"],
    {
      cwd: app,
      // No deployment, no network: the flag must not need either.
      env: { ...process.env, CONVEX_DEPLOYMENT: "", CONVEX_URL: "" },
      timeout: 60_000,
    },
  );
}

/** `npm run codegen` in `app`. */
async function npmRunCodegen(app: string): Promise<void> {
  await run(process.execPath, [TSX_CLI, CODEGEN_SCRIPT], {
    cwd: app,
    env: { ...process.env, CONVEX_DEPLOYMENT: "", CONVEX_URL: "" },
    timeout: 120_000,
  });
}

/** Every `_generated/` folder under `dir`, by path relative to it. */
function generatedTrees(dir: string): Record<string, Record<string, string>> {
  const trees: Record<string, Record<string, string>> = {};
  const walk = (current: string) => {
    for (const entry of fs.readdirSync(current, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const full = path.join(current, entry.name);
      if (entry.name === "_generated")
        trees[path.relative(dir, full)] = readTree(full);
      else walk(full);
    }
  };
  walk(dir);
  return trees;
}

function readTree(dir: string): Record<string, string> {
  return Object.fromEntries(
    fs
      .readdirSync(dir)
      .sort()
      .map((name) => [name, fs.readFileSync(path.join(dir, name), "utf8")]),
  );
}

describe("offline codegen (convex codegen --system-udfs)", () => {
  test("the committed convex/_generated is what codegen produces for the app", async () => {
    const app = copyApp(path.join(ROOT, "convex"));
    await codegen(app);
    expect(readTree(path.join(app, "convex/_generated"))).toEqual(
      readTree(path.join(ROOT, "convex/_generated")),
    );
  });

  test("it types every module of an arbitrary functions folder", async () => {
    const app = copyApp(path.join(ROOT, "local-backend/test/fixture/convex"));
    await codegen(app);
    const api = fs.readFileSync(
      path.join(app, "convex/_generated/api.d.ts"),
      "utf8",
    );
    expect(api).toContain("ApiFromModules<");
    expect(api).toContain('"dir/nested": typeof dir_nested;');
    const dataModel = fs.readFileSync(
      path.join(app, "convex/_generated/dataModel.d.ts"),
      "utf8",
    );
    expect(dataModel).toContain("DataModelFromSchemaDefinition<typeof schema>");
  });

  test("npm run codegen gives the app the same files", async () => {
    const app = copyApp(path.join(ROOT, "convex"));
    await npmRunCodegen(app);
    expect(readTree(path.join(app, "convex/_generated"))).toEqual(
      readTree(path.join(ROOT, "convex/_generated")),
    );
  });
});

describe("offline codegen for an app with components", () => {
  test("the committed _generated folders of the components fixture are what npm run codegen produces", async () => {
    const app = copyApp(COMPONENTS_FIXTURE);
    expect(generatedTrees(path.join(app, "convex"))).toEqual({});
    await npmRunCodegen(app);
    expect(generatedTrees(path.join(app, "convex"))).toEqual(
      generatedTrees(COMPONENTS_FIXTURE),
    );
  });

  test("components are typed: npm ones by their ComponentApi, local ones from their functions", () => {
    const api = fs.readFileSync(
      path.join(COMPONENTS_FIXTURE, "_generated/api.d.ts"),
      "utf8",
    );
    expect(api).toContain(
      'rateLimiter: import("@convex-dev/rate-limiter/_generated/component.js").ComponentApi<"rateLimiter">;',
    );
    expect(api).toContain(
      'archive: import("../components/notes/_generated/component.js").ComponentApi<"archive">;',
    );
    expect(
      fs.readFileSync(
        path.join(COMPONENTS_FIXTURE, "_generated/api.js"),
        "utf8",
      ),
    ).toContain("export const components = componentsGeneric();");
    const notes = fs.readFileSync(
      path.join(COMPONENTS_FIXTURE, "components/notes/_generated/component.ts"),
      "utf8",
    );
    expect(notes).toMatch(
      /add: FunctionReference<\s*"mutation",\s*"internal",\s*\{ text: string \},\s*string,\s*Name\s*>/,
    );
    // Internal functions are not part of a component's API.
    expect(notes).not.toContain("secret");
  });
});
