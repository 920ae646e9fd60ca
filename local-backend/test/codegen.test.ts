/**
 * Offline codegen: `npm run codegen` relies on the Convex CLI's hidden
 * `--system-udfs` flag, the only codegen path that needs no deployment
 * (spec §5.1). These tests notice if a convex upgrade breaks it, and that the
 * committed `convex/_generated/` matches what it produces for the app.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, test } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");
const CONVEX_CLI = path.join(ROOT, "node_modules/convex/bin/main.js");
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
});
