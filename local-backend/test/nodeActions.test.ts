/**
 * `"use node"` actions end to end (fixture `test/fixture-node`): Node's
 * built-ins, calls back into queries and mutations, storage, the scheduler,
 * identity and `process.env` through the main thread, Convex's error text,
 * a worker that exits or spins without hurting the backend, and the pushes
 * Convex refuses.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { afterEach, describe, expect, test } from "vitest";
import { runCommand } from "../src/commands.ts";
import { startBackend } from "../src/index.ts";
import { buildFunctions } from "../src/functions/loader.ts";
import {
  quietLogger,
  REPO_ROOT,
  rejection,
  removeDir,
  startTestBackend,
  tempDir,
  type TestBackend,
  waitFor,
} from "./helpers.ts";

const NODE_FIXTURE = fileURLToPath(
  new URL("./fixture-node/convex", import.meta.url),
);
// The fixture has no _generated/: its functions are addressed by name.
const api = anyApi;
/** Short enough that the runaway case ends quickly, long enough for a loaded machine. */
const TEST_TIMEOUT_MS = 4_000;

const harnesses: TestBackend[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const harness of harnesses.splice(0)) await harness.stop();
  for (const dir of dirs.splice(0)) removeDir(dir);
});

async function start(
  nodeActions: { maxWorkers?: number } = {},
  functions = NODE_FIXTURE,
  watch = false,
): Promise<{ harness: TestBackend; client: ConvexHttpClient }> {
  const harness = await startTestBackend({
    functions,
    watch,
    nodeActions: { timeoutMs: TEST_TIMEOUT_MS, ...nodeActions },
  });
  harnesses.push(harness);
  return { harness, client: harness.httpClient() };
}

/** A project folder with the given `convex/` files, next to a `node_modules` link. */
function project(files: Record<string, string>): string {
  const root = tempDir("node-project");
  dirs.push(root);
  for (const [file, source] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), source);
  }
  fs.symlinkSync(
    path.join(REPO_ROOT, "node_modules"),
    path.join(root, "node_modules"),
    "dir",
  );
  return path.join(root, "convex");
}

async function startFailure(functions: string): Promise<string> {
  const data = tempDir("node-data");
  dirs.push(data);
  const error = await rejection(
    startBackend({
      functions,
      data,
      port: 0,
      sitePort: null,
      watch: false,
      logger: quietLogger(),
    }),
  );
  return error.message;
}

const NODE_ACTION = `"use node";
import { actionGeneric } from "convex/server";
import { createHash } from "node:crypto";

export const hash = actionGeneric({
  args: {},
  handler: () => createHash("sha256").update("x").digest("hex"),
});
`;

describe('a "use node" action', () => {
  test("uses node:crypto and Buffer and writes through ctx.runMutation; a query sees the write", async () => {
    const { client } = await start();
    const result = (await client.action(api.crypto.digest, {
      body: "hello node",
    })) as Record<string, unknown>;
    const digest = createHash("sha256").update("hello node").digest("hex");
    expect(result).toMatchObject({
      digest,
      random: 16,
      base64: Buffer.from("hello node").toString("base64"),
      platform: process.platform,
    });
    expect(await client.query(api.notes.list, {})).toEqual([
      { body: "hello node", digest },
    ]);
  });

  test("logs its console output as other functions do", async () => {
    const { harness, client } = await start();
    await client.action(api.crypto.logs, {});
    expect(harness.logs.lines).toEqual(
      expect.arrayContaining([
        "[CONVEX A(crypto:logs)] [LOG] 'from node' {\n  n: 1\n}",
        "[CONVEX A(crypto:logs)] [WARN] 'careful'",
      ]),
    );
  });

  test("reads the deployment's variables, changed without a restart, and none of the host's", async () => {
    process.env.LOCAL_BACKEND_HOST_SECRET = "host only";
    const { harness, client } = await start().finally(() => {
      delete process.env.LOCAL_BACKEND_HOST_SECRET;
    });
    expect(
      await client.action(api.crypto.env, {
        name: "LOCAL_BACKEND_HOST_SECRET",
      }),
    ).toBe(null);
    expect(await client.action(api.crypto.env, { name: "GREETING" })).toBe(
      null,
    );
    expect(
      await client.action(api.crypto.env, { name: "CONVEX_CLOUD_URL" }),
    ).toBe(harness.url);
    const quiet = { out: () => undefined, err: () => undefined };
    runCommand(
      ["env", "set", "GREETING", "from env"],
      { data: harness.dataDir },
      quiet,
    );
    await waitFor(
      async () =>
        (await client.action(api.crypto.env, { name: "GREETING" })) ===
        "from env",
      "the new value in the node action",
    );
  });

  test("sees the caller's identity, and so do the queries it runs", async () => {
    const { harness, client } = await start();
    (
      client as unknown as {
        setAdminAuth(key: string, identity: Record<string, unknown>): void;
      }
    ).setAdminAuth(harness.backend.adminKey, {
      subject: "node-user",
      issuer: "https://issuer.example.com",
    });
    expect(await client.action(api.crypto.identity, {})).toEqual({
      own: "node-user",
      nested: "node-user",
    });
  });

  test("stores, reads and deletes files and schedules a mutation", async () => {
    const { client } = await start();
    expect(await client.action(api.crypto.storage, { text: "stored" })).toEqual(
      {
        text: "stored",
        type: "text/plain",
        hasUrl: true,
        size: 6,
        afterDelete: null,
      },
    );
    await client.action(api.crypto.schedule, { body: "later" });
    await waitFor(
      async () =>
        ((await client.query(api.notes.list, {})) as { body: string }[]).some(
          (note) => note.body === "later",
        ),
      "the scheduled mutation",
    );
  });

  test("calls a mutation through a function handle", async () => {
    const { client } = await start();
    expect(await client.action(api.crypto.viaHandle, { body: "handled" })).toBe(
      true,
    );
    expect(await client.query(api.notes.list, {})).toEqual([
      { body: "handled", digest: "handle" },
    ]);
  });

  test("can call node actions with a pool of one worker", async () => {
    const { client } = await start({ maxWorkers: 1 });
    const sha = (text: string) =>
      createHash("sha256").update(text).digest("hex");
    expect(await client.action(api.crypto.twice, { body: "x" })).toEqual([
      sha("x"),
      sha("x!"),
    ]);
  });
});

test("a node action calls into a component by reference and by handle; a component's node action sees its own env", async () => {
  const functions = project({
    "convex/convex.config.ts": `import { defineApp } from "convex/server";
import counter from "./counter/convex.config";
const app = defineApp();
app.use(counter, { env: { LABEL: "from the parent" } });
export default app;
`,
    "convex/counter/convex.config.ts": `import { defineComponent } from "convex/server";
export default defineComponent("counter");
`,
    "convex/counter/lib.ts": `import { mutationGeneric, queryGeneric } from "convex/server";
export const increment = mutationGeneric({
  args: {},
  handler: async (ctx) => {
    const row = await ctx.db.query("counts").first();
    if (row === null) await ctx.db.insert("counts", { n: 1 });
    else await ctx.db.patch(row._id, { n: row.n + 1 });
  },
});
export const get = queryGeneric({
  args: {},
  handler: async (ctx) => (await ctx.db.query("counts").first())?.n ?? 0,
});
`,
    "convex/counter/label.ts": `"use node";
import { actionGeneric } from "convex/server";
export const label = actionGeneric({
  args: {},
  handler: () => ({ label: process.env.LABEL ?? null, app: process.env.APP_ONLY ?? null }),
});
`,
    "convex/calls.ts": `"use node";
import { actionGeneric, componentsGeneric, createFunctionHandle } from "convex/server";
const components = componentsGeneric();
export const bump = actionGeneric({
  args: {},
  handler: async (ctx) => {
    await ctx.runMutation(components.counter.lib.increment, {});
    const handle = await createFunctionHandle(components.counter.lib.get);
    return {
      n: await ctx.runQuery(handle, {}),
      ...(await ctx.runAction(components.counter.label.label, {})),
    };
  },
});
`,
  });
  const dataDir = tempDir("node-data");
  dirs.push(dataDir);
  runCommand(
    ["env", "set", "APP_ONLY", "the app's"],
    { data: dataDir },
    { out: () => undefined, err: () => undefined },
  );
  const harness = await startTestBackend({ functions, dataDir });
  harnesses.push(harness);
  const client = harness.httpClient();
  expect(await client.action(api.calls.bump, {})).toEqual({
    n: 1,
    label: "from the parent",
    app: null,
  });
});

describe("failures", () => {
  test("a thrown error reads as Convex prints it, with frames in the app's source", async () => {
    const { client } = await start();
    expect(
      (await rejection(client.action(api.crypto.fail, {}))).message,
    ).toMatch(
      /^\[Request ID: [0-9a-f]+\] Server Error\nUncaught Error: boom from node\n {4}at handler \(\.\.\/convex\/crypto\.ts:\d+:\d+\)\n$/,
    );
    const convexError = (await rejection(
      client.action(api.crypto.failConvex, {}),
    )) as Error & { data?: unknown };
    expect(convexError.data).toEqual({ code: "NODE_REFUSED" });
  });

  test("a worker that calls process.exit() or throws from a callback fails its action; other calls carry on", async () => {
    const { client } = await start();
    expect(
      (await rejection(client.action(api.crypto.exit, {}))).message,
    ).toContain(
      "The Node.js runtime running this action exited with code 3 (process.exit() or a crash) before the action finished",
    );
    expect(
      (await rejection(client.action(api.crypto.throwLater, {}))).message,
    ).toMatch(
      /\nUncaught Error: late boom\n {4}at .*\(\.\.\/convex\/crypto\.ts:\d+:\d+\)\n$/,
    );
    expect(
      await client.action(api.crypto.env, { name: "CONVEX_CLOUD_URL" }),
    ).not.toBe(null);
  });

  test("a spinning action times out, and the backend serves others meanwhile", async () => {
    const { client } = await start();
    let settled = false;
    const spinning = rejection(
      client.action(api.crypto.spin, {}),
      TEST_TIMEOUT_MS * 3,
    ).finally(() => {
      settled = true;
    });
    expect(await client.query(api.notes.list, {})).toEqual([]);
    await client.action(api.crypto.digest, { body: "while spinning" });
    expect(settled).toBe(false);
    expect((await spinning).message).toMatch(
      /Server Error\nFunction execution unexpectedly timed out\. Check your function for infinite loops or other long-running operations\.\n$/,
    );
    await client.action(api.crypto.digest, { body: "after" });
    expect(
      ((await client.query(api.notes.list, {})) as { body: string }[]).map(
        (n) => n.body,
      ),
    ).toEqual(["while spinning", "after"]);
  });

  test("an action that waits past its limit fails with the Node runtime's text", async () => {
    const { client } = await start();
    expect(
      (
        await rejection(
          client.action(api.crypto.sleep, {}),
          TEST_TIMEOUT_MS * 3,
        )
      ).message,
    ).toMatch(
      new RegExp(
        `Server Error\\nAction \`sleep\` execution timed out \\(maximum duration ${TEST_TIMEOUT_MS / 1000}s\\)\\n$`,
      ),
    );
    await client.action(api.crypto.digest, { body: "after" });
  });

  test("arguments over 5 MiB are refused, as Convex refuses them for Node actions", async () => {
    const { client } = await start();
    expect(
      (
        await rejection(
          client.action(api.crypto.env, { name: "x".repeat(6 * 1024 * 1024) }),
        )
      ).message,
    ).toContain(
      "Node actions arguments size is too large. The maximum size is 5 MiB.",
    );
  });
});

describe("pushes", () => {
  test("a node module that defines a mutation is refused with Convex's text", async () => {
    const functions = project({
      "convex/bad.ts": `"use node";
import { mutationGeneric } from "convex/server";
export const write = mutationGeneric({ args: {}, handler: () => null });
`,
    });
    expect(await startFailure(functions)).toContain(
      "`write` defined in `bad.js` is a Mutation function. Only actions can be defined in Node.js. See https://docs.convex.dev/functions/actions for more details.",
    );
  });

  test('"use node" is refused in http.ts, as the CLI refuses it', async () => {
    const functions = project({ "convex/http.ts": NODE_ACTION });
    expect(await startFailure(functions)).toContain(
      '"use node" directive is not allowed for http.ts.',
    );
  });

  test("importing a node module from an isolate one fails with the CLI's hint", async () => {
    const functions = project({
      "convex/hashing.ts": NODE_ACTION,
      "convex/plain.ts": `import { queryGeneric } from "convex/server";
import { hash } from "./hashing";
export const get = queryGeneric({ args: {}, handler: () => typeof hash });
`,
    });
    expect(await startFailure(functions)).toContain(
      'It looks like you are using Node APIs from a file without the "use node" directive.',
    );
  });

  test("an edited node module is picked up by the watcher, and so is an isolate edit beside it", async () => {
    const plain = (
      text: string,
    ) => `import { queryGeneric } from "convex/server";
export const get = queryGeneric({ args: {}, handler: () => ${JSON.stringify(text)} });
`;
    const functions = project({
      "convex/hashing.ts": NODE_ACTION,
      "convex/plain.ts": plain("first"),
    });
    const { client } = await start({}, functions, true);
    const sha = (text: string) =>
      createHash("sha256").update(text).digest("hex");
    expect(await client.action(api.hashing.hash, {})).toBe(sha("x"));
    fs.writeFileSync(
      path.join(functions, "hashing.ts"),
      NODE_ACTION.replace('update("x")', 'update("edited")'),
    );
    await waitFor(
      async () => (await client.action(api.hashing.hash, {})) === sha("edited"),
      "the edited action",
    );
    fs.writeFileSync(path.join(functions, "plain.ts"), plain("second"));
    await waitFor(
      async () => (await client.query(api.plain.get, {})) === "second",
      "the edited query",
    );
    expect(await client.action(api.hashing.hash, {})).toBe(sha("edited"));
  });

  test("convex.json externalPackages are imported from node_modules, not bundled", async () => {
    const functions = project({
      "convex.json": JSON.stringify({ node: { externalPackages: ["ws"] } }),
      "package.json": JSON.stringify({ dependencies: { ws: "*" } }),
      "convex/sockets.ts": `"use node";
import { actionGeneric } from "convex/server";
import { WebSocketServer } from "ws";
export const kind = actionGeneric({ args: {}, handler: () => typeof WebSocketServer });
`,
    });
    const bundle = await buildFunctions(functions);
    const wsEntry = fs.realpathSync(
      path.join(REPO_ROOT, "node_modules", "ws", "wrapper.mjs"),
    );
    expect(bundle.node?.code).toContain(`from "file://${wsEntry}"`);
    const { client } = await start({}, functions);
    expect(await client.action(api.sockets.kind, {})).toBe("function");
  });
});
