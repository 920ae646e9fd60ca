/**
 * `npx tsx bench/runaway.ts [--quick]`: what a runaway function costs other
 * clients, and what the chat's own validation costs for huge inputs.
 *
 * Cases (each beside a baseline measured in the same run):
 * - another client's one-shot query and mutation latency while a query spins
 *   in a synchronous loop, awaits syscalls in a loop, or scans past 32,000
 *   documents, and while a mutation that wrote spins either way (each
 *   stopped by the backend with Convex's error), and while a query keeps
 *   allocating, between reads or synchronously (stopped at Convex's 64 MB),
 *   with the backend's RSS after each case and the error the runaway got;
 * - `messages.send` of the chat with a 100-, 40,000- and 1,000,000-character
 *   body (the last two are refused), and `users.setName` with 40 and 100,000.
 */
import { fork, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { chatApi as api } from "../e2e/helpers/chatApi.ts";
import { formatSummary, rssMiB, summarize } from "./stats.ts";

const QUICK = process.argv.includes("--quick");
const SAMPLES = QUICK ? 30 : 100;
const RUNAWAYS = QUICK ? 2 : 4;
/** `--case=<text>`: only the runaway cases whose label contains it. */
const CASE = process.argv
  .find((arg) => arg.startsWith("--case="))
  ?.slice("--case=".length);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const FIXTURE = path.join(ROOT, "local-backend/test/fixture/convex");

async function spawnBackend(
  functions: string,
): Promise<{ url: string; child: ChildProcess; data: string }> {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-runaway-"));
  const child = fork(
    path.join(ROOT, "bench/backendProcess.ts"),
    [functions, data],
    {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    },
  );
  const url = await new Promise<string>((resolve) => {
    child.on("message", (message: { type: string; url?: string }) => {
      if (message.type === "ready") resolve(message.url!);
    });
  });
  return { url, child, data };
}

async function stop(backend: { child: ChildProcess; data: string }) {
  backend.child.send({ type: "stop" });
  await new Promise((resolve) => backend.child.once("exit", resolve));
  fs.rmSync(backend.data, { recursive: true, force: true });
}

/**
 * Another client's latencies, sampled until `until` settles (at least `min`
 * samples): `call` is its query or its mutation.
 */
async function sampleOther(
  url: string,
  until: Promise<unknown> | null,
  min: number,
  call: (client: ConvexHttpClient) => Promise<unknown> = (client) =>
    client.query(anyApi.greeting.default, {}),
): Promise<number[]> {
  const other = new ConvexHttpClient(url, { logger: false });
  const times: number[] = [];
  let done = until === null;
  void until?.finally(() => (done = true));
  while (!done || times.length < min) {
    const start = performance.now();
    await call(other);
    times.push(performance.now() - start);
    if (until === null && times.length >= min) break;
  }
  return times;
}

const otherMutation = (client: ConvexHttpClient) =>
  client.mutation(anyApi.counters.increment, { name: "other client" });

async function runaways(): Promise<void> {
  const backend = await spawnBackend(FIXTURE);
  try {
    const http = new ConvexHttpClient(backend.url, { logger: false });
    for (const count of [8_000, 8_000, 8_000, 8_001]) {
      await http.mutation(anyApi.limits.fill, {
        author: "scan",
        count,
        size: 1,
      });
    }
    console.log(
      `backend RSS before: ${rssMiB(backend.child.pid!).toFixed(0)} MiB`,
    );
    const baseline = await sampleOther(backend.url, null, SAMPLES);
    console.log(
      formatSummary(
        "other client's query, no runaway (baseline)",
        summarize(baseline),
      ),
    );
    const mutationBaseline = await sampleOther(
      backend.url,
      null,
      SAMPLES,
      otherMutation,
    );
    console.log(
      formatSummary(
        "other client's mutation, no runaway (baseline)",
        summarize(mutationBaseline),
      ),
    );
    const cases: [string, () => Promise<unknown>][] = [
      [
        "sync loop `for(;;){}` (query)",
        () => http.query(anyApi.runaway.syncLoop, {}),
      ],
      [
        "async loop over `db.query().first()` (query)",
        () => http.query(anyApi.runaway.asyncLoop, {}),
      ],
      [
        "scan past 32,000 documents (query)",
        () => http.query(anyApi.limits.read, { author: "scan", n: 40_000 }),
      ],
      [
        "keeps allocating between reads (query)",
        () =>
          http.query(anyApi.runaway.allocateBetweenReads, { buffers: false }),
      ],
      [
        "keeps allocating ArrayBuffers between reads (query)",
        () =>
          http.query(anyApi.runaway.allocateBetweenReads, { buffers: true }),
      ],
      [
        "allocates without a pause (query)",
        () => http.query(anyApi.runaway.allocate, {}),
      ],
      [
        "write, then sync loop (mutation)",
        () =>
          http.mutation(anyApi.runaway.writeThenSpin, {
            name: "runaway",
            async: false,
          }),
      ],
      [
        "write, then async loop (mutation)",
        () =>
          http.mutation(anyApi.runaway.writeThenSpin, {
            name: "runaway",
            async: true,
          }),
      ],
    ];
    for (const [label, run] of cases) {
      if (CASE !== undefined && !label.includes(CASE)) continue;
      const durations: number[] = [];
      let error = "";
      const all = (async () => {
        for (let i = 0; i < RUNAWAYS; i++) {
          const start = performance.now();
          await run().catch((e: Error) => (error ||= e.message));
          durations.push(performance.now() - start);
        }
      })();
      const [times, mutationTimes] = await Promise.all([
        sampleOther(backend.url, all, 1),
        sampleOther(backend.url, all, 1, otherMutation),
      ]);
      console.log(
        formatSummary(
          `other client's query, during ${label}`,
          summarize(times),
        ),
      );
      console.log(
        formatSummary(
          `other client's mutation, during ${label}`,
          summarize(mutationTimes),
        ),
      );
      console.log(
        formatSummary(
          `  the runaway itself until stopped`,
          summarize(durations),
        ),
      );
      // "[Request ID: …] Server Error", then the message (errors.ts).
      console.log(
        `  its error: ${error.split("\n")[1] ?? error}; backend RSS after: ${rssMiB(backend.child.pid!).toFixed(0)} MiB`,
      );
    }
  } finally {
    await stop(backend);
  }
}

async function chatValidation(): Promise<void> {
  const backend = await spawnBackend(path.join(ROOT, "convex"));
  try {
    const http = new ConvexHttpClient(backend.url, { logger: false });
    // A new guest per call, so the chat's rate limits never answer first.
    const time = async (
      label: string,
      call: (sessionId: string) => Promise<unknown>,
    ) => {
      const times: number[] = [];
      for (let i = 0; i < (QUICK ? 5 : 20); i++) {
        const sessionId = crypto.randomUUID();
        await http.mutation(api.sessions.start, { sessionId } as never);
        const start = performance.now();
        await call(sessionId).catch(() => undefined);
        times.push(performance.now() - start);
      }
      console.log(formatSummary(label, summarize(times)));
    };
    for (const n of [100, 40_000, 1_000_000]) {
      await time(
        `chat messages.send, ${n.toLocaleString("en")}-char body`,
        (sessionId) =>
          http.mutation(api.messages.send, {
            sessionId,
            body: "é".repeat(n),
          } as never),
      );
    }
    for (const n of [40, 100_000]) {
      await time(
        `chat users.setName, ${n.toLocaleString("en")}-char name`,
        (sessionId) =>
          http.mutation(api.users.setName, {
            sessionId,
            name: "é".repeat(n),
          } as never),
      );
    }
  } finally {
    await stop(backend);
  }
}

export async function runawayBench(): Promise<void> {
  console.log("\nrunaway functions and validation (times in ms)");
  await runaways();
  if (CASE === undefined) await chatValidation();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await runawayBench();
}
