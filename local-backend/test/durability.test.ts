/**
 * The CLI as a real child process: acknowledged writes survive `kill -9`,
 * shutdown on SIGTERM, and the one-line start-up errors. Also schema changes
 * that existing data violates, which must leave the data untouched.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { ConvexHttpClient } from "convex/browser";
import { afterEach, describe, expect, test } from "vitest";
import { decodeTs } from "../src/values/wire.ts";
import { StartupError, startBackend } from "../src/index.ts";
import {
  api,
  copyFixture,
  FIXTURE_DIR,
  type MutationResponse,
  quietLogger,
  RawSyncClient,
  REPO_ROOT,
  removeDir,
  tempDir,
  waitFor,
  withTimeout,
} from "./helpers.ts";

const CLI = path.join(REPO_ROOT, "local-backend/src/cli.ts");
const READY = /Convex local backend ready at (http:\/\/\S+)/;
const START_TIMEOUT_MS = 20_000;

type Exit = { code: number | null; signal: NodeJS.Signals | null };

type Cli = {
  child: ChildProcess;
  output(): string;
  errors(): string;
  exited: Promise<Exit>;
};

const children = new Set<Cli>();
const dirs: string[] = [];
const sockets: RawSyncClient[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.terminate();
  for (const cli of children) {
    if (cli.child.exitCode === null && cli.child.signalCode === null) {
      cli.child.kill("SIGKILL");
    }
    await withTimeout(cli.exited, "a CLI child to exit");
  }
  children.clear();
  for (const dir of dirs.splice(0)) removeDir(dir);
});

function newDir(prefix: string): string {
  const dir = tempDir(prefix);
  dirs.push(dir);
  return dir;
}

/**
 * Runs the CLI in one Node process (no tsx wrapper), so signals reach the
 * backend itself. `onStdout` sees the output so far, synchronously with its arrival.
 */
function spawnCli(args: string[], onStdout?: (stdout: string) => void): Cli {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
    onStdout?.(stdout);
  });
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const cli: Cli = {
    child,
    output: () => stdout,
    errors: () => stderr,
    exited: new Promise((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    ),
  };
  children.add(cli);
  return cli;
}

function cliArgs(functions: string, data: string, port = "0"): string[] {
  return [
    "--functions",
    functions,
    "--data",
    data,
    "--port",
    port,
    "--site-port",
    "0",
    "--no-watch",
  ];
}

/** Starts the CLI and resolves with its URL once it prints the ready line. */
async function startCli(
  functions: string,
  data: string,
): Promise<{ cli: Cli; url: string }> {
  const cli = spawnCli(cliArgs(functions, data));
  const url = await waitFor(
    () => {
      if (cli.child.exitCode !== null) {
        throw new Error(
          `the backend exited with ${cli.child.exitCode}: ${cli.errors()}`,
        );
      }
      return READY.exec(cli.output())?.[1];
    },
    "the ready line",
    START_TIMEOUT_MS,
  );
  return { cli, url };
}

/** Runs the CLI expecting it to fail at start-up; returns its exit code and stderr. */
async function failedStart(
  args: string[],
): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const cli = spawnCli(args);
  const exit = await withTimeout(
    cli.exited,
    "the CLI to exit",
    START_TIMEOUT_MS,
  );
  return { code: exit.code, stderr: cli.errors(), stdout: cli.output() };
}

async function rawSocket(url: string, sessionId: string) {
  const raw = await RawSyncClient.open(url);
  sockets.push(raw);
  await raw.connect(sessionId);
  return raw;
}

async function mutateRaw(
  raw: RawSyncClient,
  requestId: number,
  body: string,
): Promise<MutationResponse & { success: true }> {
  await raw.send({
    type: "Mutation",
    requestId,
    udfPath: "messages:send",
    args: [{ author: "durable", body }],
  });
  const response = await raw.mutationResponse(requestId);
  if (!response.success) throw new Error(response.result);
  return response;
}

describe("crash safety", () => {
  test("acknowledged mutations survive kill -9 with their ids, creation times and dedupe records", async () => {
    const data = newDir("crash");
    const first = await startCli(FIXTURE_DIR, data);
    const http = new ConvexHttpClient(first.url, { logger: false });
    const N = 50;
    for (let i = 0; i < N; i++) {
      await http.mutation(api.messages.send, {
        author: "durable",
        body: `message ${i}`,
      });
    }
    const before = await http.query(api.messages.byAuthor, {
      author: "durable",
    });
    expect(before).toHaveLength(N);
    // Patches, replaces and deletes, in tables created after the first one.
    for (let i = 0; i < 5; i++) {
      await http.mutation(api.counters.increment, { name: "crash" });
    }
    const [kept, patched, deleted] = [
      await http.mutation(api.items.insert, { group: "g", rank: 1 }),
      await http.mutation(api.items.insert, { group: "g", rank: 2 }),
      await http.mutation(api.items.insert, { group: "g", rank: 3 }),
    ];
    await http.mutation(api.items.patch, { id: patched, value: 42n });
    await http.mutation(api.items.replace, { id: kept, group: "g", rank: 0 });
    await http.mutation(api.items.remove, { id: deleted });
    const itemsBefore = await http.query(api.items.all, {});
    expect(itemsBefore).toHaveLength(2);
    const sessionId = randomUUID();
    const raw = await rawSocket(first.url, sessionId);
    const last = await mutateRaw(raw, 0, "the last acknowledged");
    first.cli.child.kill("SIGKILL");
    expect(await withTimeout(first.cli.exited, "kill -9")).toMatchObject({
      signal: "SIGKILL",
    });

    const second = await startCli(FIXTURE_DIR, data);
    const http2 = new ConvexHttpClient(second.url, { logger: false });
    const after = await http2.query(api.messages.byAuthor, {
      author: "durable",
    });
    expect(after).toHaveLength(N + 1);
    expect(after.slice(0, N)).toEqual(before);
    expect(after[N]).toMatchObject({
      _id: last.result,
      body: "the last acknowledged",
    });
    expect(await http2.query(api.items.all, {})).toEqual(itemsBefore);
    expect(await http2.query(api.counters.get, { name: "crash" })).toBe(5);
    // IDs still name their tables (the table-number registry survived).
    expect(await http2.query(api.messages.get, { id: before[0]._id })).toEqual(
      before[0],
    );
    expect(await http2.query(api.messages.get, { id: kept })).toBe(
      "not a messages ID",
    );

    // The client that never saw its answer resends request 0: same answer, no second row.
    const reconnected = await rawSocket(second.url, sessionId);
    const replayed = await mutateRaw(reconnected, 0, "the last acknowledged");
    expect(replayed.result).toBe(last.result);
    expect(replayed.ts).toBe(last.ts);

    // Time moves on from where it was before the crash.
    const fresh = await mutateRaw(reconnected, 1, "after the restart");
    expect(decodeTs(fresh.ts)).toBeGreaterThan(decodeTs(last.ts));
    const final = await http2.query(api.messages.byAuthor, {
      author: "durable",
    });
    expect(final).toHaveLength(N + 2);
    const newest = final.find((m) => m._id === fresh.result)!;
    expect(newest._creationTime).toBeGreaterThan(
      Math.max(...after.map((m) => m._creationTime)),
    );
  });

  test("kill -9 during a burst from 50 writers loses no acknowledged write, and their resends after the restart add none twice", async () => {
    const data = newDir("burst");
    const first = await startCli(FIXTURE_DIR, data);
    const WRITERS = 50;
    const MAX_WRITES_PER_WRITER = 200;
    type Writer = {
      sessionId: string;
      acknowledged: Map<string, string>;
      /** The request sent and not yet answered when the backend died. */
      inFlight: { requestId: number; body: string } | null;
    };
    const writers: Writer[] = Array.from({ length: WRITERS }, () => ({
      sessionId: randomUUID(),
      acknowledged: new Map(),
      inFlight: null,
    }));
    const acknowledged = () =>
      writers.reduce((n, w) => n + w.acknowledged.size, 0);
    const bursts = writers.map(async (writer, w) => {
      const raw = await rawSocket(first.url, writer.sessionId);
      const dropped = raw.closed.then(() => {
        throw new Error("the backend went away");
      });
      for (let requestId = 0; requestId < MAX_WRITES_PER_WRITER; requestId++) {
        const body = `${w}-${requestId}`;
        writer.inFlight = { requestId, body };
        const answer = await Promise.race([
          mutateRaw(raw, requestId, body),
          dropped,
        ]);
        writer.acknowledged.set(body, answer.result as string);
        writer.inFlight = null;
      }
    });
    // Observe the writers' failures from the start: they fail as soon as the kill lands.
    const burstsSettled = Promise.allSettled(bursts);
    await waitFor(() => acknowledged() >= 500, "500 acknowledged writes");
    first.cli.child.kill("SIGKILL");
    await withTimeout(first.cli.exited, "kill -9");
    const settled = await withTimeout(burstsSettled, "the writers to notice");
    expect(settled.some((s) => s.status === "rejected")).toBe(true);

    const second = await startCli(FIXTURE_DIR, data);
    // Each writer reconnects with its session and resends what was unanswered,
    // as ConvexClient does: it gets one answer, whether or not the request
    // had committed before the crash.
    const resent = new Map<string, string>();
    await Promise.all(
      writers.map(async (writer) => {
        if (writer.inFlight === null) return;
        const raw = await rawSocket(second.url, writer.sessionId);
        const { requestId, body } = writer.inFlight;
        resent.set(
          body,
          (await mutateRaw(raw, requestId, body)).result as string,
        );
      }),
    );
    const rows = await new ConvexHttpClient(second.url, {
      logger: false,
    }).query(api.messages.byAuthor, { author: "durable" });
    const idOfBody = new Map(rows.map((r) => [r.body, r._id as string]));
    expect(idOfBody.size).toBe(rows.length);
    const lost = writers.flatMap((w) =>
      [...w.acknowledged].filter(([body, id]) => idOfBody.get(body) !== id),
    );
    expect(lost).toEqual([]);
    expect(
      [...resent].filter(([body, id]) => idOfBody.get(body) !== id),
    ).toEqual([]);
    expect(rows).toHaveLength(acknowledged() + resent.size);
  });
});

describe("the CLI", () => {
  test("SIGTERM or SIGINT sent as soon as the ready line appears exits with status 0 and releases the data dir", async () => {
    const data = newDir("signals");
    // A supervisor may signal the moment it reads the ready line; repeat to catch a race.
    const signals = [
      ...Array.from({ length: 6 }, () => "SIGTERM" as const),
      "SIGINT" as const,
    ];
    for (const signal of signals) {
      const cli: Cli = spawnCli(cliArgs(FIXTURE_DIR, data), (stdout) => {
        if (READY.test(stdout) && !cli.child.killed) cli.child.kill(signal);
      });
      const exit = await withTimeout(cli.exited, signal, START_TIMEOUT_MS);
      expect(
        exit,
        `after ${signal}, the output was: ${cli.output()}${cli.errors()}`,
      ).toEqual({ code: 0, signal: null });
    }
  });

  test("a second backend on the same data dir fails with one line naming the data dir", async () => {
    const data = newDir("locked");
    const running = await startCli(FIXTURE_DIR, data);

    const { code, stderr } = await failedStart(cliArgs(FIXTURE_DIR, data));

    expect(code).toBe(1);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain(data);
    const http = new ConvexHttpClient(running.url, { logger: false });
    expect(await http.query(api.greeting.default, {})).toBe(
      "hello from the default export",
    );
  });

  test("a port in use gives a one-line error and exit code 1", async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) =>
      blocker.listen(0, "127.0.0.1", resolve),
    );
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const { code, stderr } = await failedStart(
        cliArgs(FIXTURE_DIR, newDir("port"), String(port)),
      );
      expect(code).toBe(1);
      expect(stderr.trim().split("\n")).toHaveLength(1);
      expect(stderr).toContain(`Port ${port} is in use`);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  test("a missing functions folder gives a clear one-line error", async () => {
    const missing = path.join(newDir("missing"), "no-such-convex");
    const { code, stderr } = await failedStart(
      cliArgs(missing, newDir("data")),
    );
    expect(code).toBe(1);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain(missing);
    expect(stderr).toMatch(/does not exist/);
  });

  test("a bad flag value gives a one-line error", async () => {
    const { code, stderr } = await failedStart(
      cliArgs(FIXTURE_DIR, newDir("flag"), "not-a-port"),
    );
    expect(code).toBe(1);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("--port");
  });

  test("a module with a syntax error fails start-up with the esbuild error", async () => {
    const root = newDir("syntax");
    const functions = copyFixture(root);
    fs.writeFileSync(
      path.join(functions, "broken.ts"),
      'export const value = ;\nexport const other = "fine";\n',
    );

    const { code, stderr } = await failedStart(
      cliArgs(functions, newDir("data")),
    );

    expect(code).toBe(1);
    expect(stderr).toContain("broken.ts:1:");
    expect(stderr).toContain('Unexpected ";"');
  });
});

describe("in-process start-up", () => {
  test("a data dir already open in this process is refused with a StartupError naming it", async () => {
    const data = newDir("twice");
    const options = {
      functions: FIXTURE_DIR,
      data,
      port: 0,
      sitePort: null,
      watch: false,
      logger: quietLogger(),
    };
    const first = await startBackend(options);
    try {
      const error = await startBackend(options).then(
        async (second) => {
          await second.close();
          return null;
        },
        (e: unknown) => e as Error,
      );
      expect(error).toBeInstanceOf(StartupError);
      expect(error!.message).toContain(data);
      const http = new ConvexHttpClient(first.url, { logger: false });
      expect(await http.query(api.greeting.default, {})).toBe(
        "hello from the default export",
      );
    } finally {
      await first.close();
    }
  });
});

describe("start-up errors that name the source", () => {
  async function startWith(file: string, source: string): Promise<Error> {
    const functions = copyFixture(newDir("source"));
    fs.writeFileSync(path.join(functions, file), source);
    return await startBackend({
      functions,
      data: newDir("data"),
      port: 0,
      sitePort: null,
      watch: false,
      logger: quietLogger(),
    }).then(
      async (backend) => {
        await backend.close();
        throw new Error(`the backend started despite ${file}`);
      },
      (error: unknown) => error as Error,
    );
  }

  test("a module that throws while loading fails start-up at its source line", async () => {
    const error = await startWith(
      "boom.ts",
      [
        'import { v } from "convex/values";',
        "export const unused = v.string();",
        "function explode(): never {",
        '  throw new Error("boom at load");',
        "}",
        "explode();",
        "",
      ].join("\n"),
    );
    expect(error).toBeInstanceOf(StartupError);
    expect(error.message).toContain("boom at load");
    expect(error.message).toContain("boom.ts:4:");
  });

  test("a module importing a Node built-in fails start-up naming the import", async () => {
    const error = await startWith(
      "nodey.ts",
      'import fs from "node:fs";\nexport const size = fs.statSync(".").size;\n',
    );
    expect(error).toBeInstanceOf(StartupError);
    expect(error.message).toContain("nodey.ts:1:");
    expect(error.message).toContain("node:fs");
  });
});

describe("schema changes", () => {
  test("a schema that existing data violates fails start-up and leaves the data untouched", async () => {
    const root = newDir("schema");
    const functions = copyFixture(root);
    const data = newDir("data");
    const logger = quietLogger();
    const options = {
      functions,
      data,
      port: 0,
      sitePort: null,
      watch: false,
      logger,
    };
    let backend = await startBackend(options);
    const http = new ConvexHttpClient(backend.url, { logger: false });
    await http.mutation(api.messages.send, { author: "ann", body: "text" });
    const before = await http.query(api.messages.list, {});
    await backend.close();

    const schemaFile = path.join(functions, "schema.ts");
    const goodSchema = fs.readFileSync(schemaFile, "utf8");
    fs.writeFileSync(
      schemaFile,
      goodSchema.replace("body: v.string()", "body: v.number()"),
    );

    const error = await startBackend(options).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(error).toBeInstanceOf(StartupError);
    expect(error!.message).toMatch(/schema/i);
    expect(error!.message).toContain('"messages"');
    expect(error!.message).toContain(before[0]._id);
    expect(error!.message).toContain(".body");

    fs.writeFileSync(schemaFile, goodSchema);
    backend = await startBackend(options);
    try {
      const again = new ConvexHttpClient(backend.url, { logger: false });
      expect(await again.query(api.messages.list, {})).toEqual(before);
    } finally {
      await backend.close();
    }
  });
});

describe("scheduled functions across kill -9", () => {
  type JobState = { state: { kind: string; error?: string } } | null;

  test("a mutation pending at kill -9 runs exactly once after restart", async () => {
    const data = newDir("scheduled");
    const first = await startCli(FIXTURE_DIR, data);
    const id = await new ConvexHttpClient(first.url, {
      logger: false,
    }).mutation(api.scheduled.later, { body: "survivor", delayMs: 1500 });
    first.cli.child.kill("SIGKILL");
    await withTimeout(first.cli.exited, "kill -9");

    const second = await startCli(FIXTURE_DIR, data);
    const http = new ConvexHttpClient(second.url, { logger: false });
    await waitFor(
      async () =>
        ((await http.query(api.scheduled.job, { id })) as unknown as JobState)
          ?.state.kind === "success",
      "the job to run after the restart",
      START_TIMEOUT_MS,
    );
    second.cli.child.kill("SIGKILL");
    await withTimeout(second.cli.exited, "kill -9");

    const third = await startCli(FIXTURE_DIR, data);
    const after = new ConvexHttpClient(third.url, { logger: false });
    const runs = await after.query(api.messages.byAuthor, {
      author: "scheduled",
    });
    expect(runs.map((m) => m.body)).toEqual(["survivor"]);
  });

  test("an action in progress at kill -9 is failed after restart, not run again", async () => {
    const data = newDir("scheduled-action");
    const first = await startCli(FIXTURE_DIR, data);
    const before = new ConvexHttpClient(first.url, { logger: false });
    const id = await before.mutation(api.scheduled.later, {
      body: "cut off",
      delayMs: 0,
      kind: "slowAction",
    });
    await waitFor(
      async () =>
        (
          (await before.query(api.scheduled.job, {
            id,
          })) as unknown as JobState
        )?.state.kind === "inProgress",
      "the action to start",
    );
    first.cli.child.kill("SIGKILL");
    await withTimeout(first.cli.exited, "kill -9");

    const second = await startCli(FIXTURE_DIR, data);
    const http = new ConvexHttpClient(second.url, { logger: false });
    const job = await waitFor(async () => {
      const found = (await http.query(api.scheduled.job, {
        id,
      })) as unknown as JobState;
      return found?.state.kind === "failed" ? found : null;
    }, "the cut-off action to be failed");
    expect(job.state.error).toBe("Transient error while executing action");
    expect(
      await http.query(api.messages.byAuthor, { author: "scheduled" }),
    ).toEqual([]);
  });
});
