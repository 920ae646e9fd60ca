/**
 * `npx tsx bench/nodeActions.ts [--quick]`: what running an action in a
 * `"use node"` worker costs over running it in the isolate, on the same
 * backend in the same run (fixture `local-backend/test/fixture-node`).
 *
 * Cases, each node case beside its isolate twin:
 * - an empty action (`ConvexHttpClient.action` round trip);
 * - an action that writes through `ctx.runMutation` (one syscall each way);
 * - 4 concurrent callers of the empty action;
 * - the backend's start-up with the fixture (the first build starts a worker
 *   to analyse the node module) beside the same fixture without it.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { startBackend } from "../local-backend/src/index.ts";
import { formatSummary, summarize } from "./stats.ts";

const QUICK = process.argv.includes("--quick");
const SAMPLES = QUICK ? 50 : 300;
const STARTS = QUICK ? 3 : 8;
const CONCURRENCY = 4;
const FIXTURE = fileURLToPath(
  new URL("../local-backend/test/fixture-node/convex", import.meta.url),
);
const api = anyApi;
const quiet = { info: () => undefined, error: () => undefined };

async function timed(run: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await run();
  return performance.now() - start;
}

async function samples(
  count: number,
  run: (i: number) => Promise<unknown>,
): Promise<number[]> {
  for (let i = 0; i < 10; i++) await run(-1 - i);
  const result: number[] = [];
  for (let i = 0; i < count; i++) result.push(await timed(() => run(i)));
  return result;
}

async function main(): Promise<void> {
  // The baseline: the fixture without its `"use node"` module.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "bench-node-isolate-"));
  fs.cpSync(FIXTURE, path.join(root, "convex"), { recursive: true });
  fs.rmSync(path.join(root, "convex", "crypto.ts"));
  fs.symlinkSync(
    fileURLToPath(new URL("../node_modules", import.meta.url)),
    path.join(root, "node_modules"),
    "dir",
  );
  for (const [label, functions] of [
    ["start-up, isolate modules only (ms)", path.join(root, "convex")],
    ['start-up, plus one "use node" module (ms)', FIXTURE],
  ] as const) {
    const starts: number[] = [];
    for (let i = 0; i < STARTS; i++) {
      const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-node-"));
      const start = performance.now();
      const backend = await startBackend({
        functions,
        data,
        port: 0,
        sitePort: null,
        watch: false,
        logger: quiet,
      });
      starts.push(performance.now() - start);
      await backend.close();
      fs.rmSync(data, { recursive: true, force: true });
    }
    console.log(formatSummary(label, summarize(starts)));
  }
  fs.rmSync(root, { recursive: true, force: true });

  const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-node-"));
  const backend = await startBackend({
    functions: FIXTURE,
    data,
    port: 0,
    sitePort: null,
    watch: false,
    logger: quiet,
  });
  const client = new ConvexHttpClient(backend.url, { logger: false });
  try {
    const cases: [string, (i: number) => Promise<unknown>][] = [
      ["empty action, isolate (ms)", () => client.action(api.notes.ping, {})],
      [
        "empty action, node (ms)",
        () => client.action(api.crypto.env, { name: "X" }),
      ],
      [
        "action + runMutation, isolate (ms)",
        (i) => client.action(api.notes.write, { body: `i${i}` }),
      ],
      [
        "action + runMutation + sha256, node (ms)",
        (i) => client.action(api.crypto.digest, { body: `n${i}` }),
      ],
    ];
    for (const [label, run] of cases)
      console.log(formatSummary(label, summarize(await samples(SAMPLES, run))));
    for (const [label, run] of [
      ["isolate", () => client.action(api.notes.ping, {})],
      ["node", () => client.action(api.crypto.env, { name: "X" })],
    ] as const) {
      const batch = await samples(SAMPLES / CONCURRENCY, () =>
        Promise.all(Array.from({ length: CONCURRENCY }, () => run())),
      );
      console.log(
        formatSummary(
          `${CONCURRENCY} concurrent empty actions, ${label}, per batch (ms)`,
          summarize(batch),
        ),
      );
    }
  } finally {
    await backend.close();
    fs.rmSync(data, { recursive: true, force: true });
  }
}

await main();
