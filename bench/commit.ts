/**
 * Group commit benchmarks (issue 7): durable mutations per second with 1 and
 * with 50 concurrent writers, each writer in a closed loop (send, wait for the
 * answer, which comes only once the commit is on disk), with ack latency
 * percentiles, fsyncs per mutation and the backend's longest event-loop stall.
 *
 * Beside them, measured in the same run on the same disk, the floor of bare
 * better-sqlite3 (WAL, `synchronous = FULL`): one-row transactions, each
 * fsynced, and 50 rows per transaction.
 *
 * Cases:
 * - the fixture's `messages.send` (one insert, no rate limit): pure commit
 *   throughput, over sync sockets (as `ConvexClient` sends) and over HTTP
 *   (`ConvexHttpClient`);
 * - the chat's `messages.send`, which also writes through the rate limiter:
 *   a user may send MESSAGE_BURST at once, so each writer rotates over a pool
 *   of guests created beforehand.
 *
 * The concurrent fixture cases start with as many untimed mutations as the
 * single writer's case (1,500), whose rate is reported beside the measured
 * one: the first ~2,000 after a start ran at half the steady rate, with V8's
 * helper threads at ~50 µs of CPU per mutation (compiling the hot paths,
 * growing the heap) against ~5 later, so a case measured from a cold start
 * told more about the start than about the steady rate.
 *
 * Usage: npm run bench -- --only=commit [--quick]
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { MESSAGE_BURST } from "../convex/limits.ts";
import {
  type Child,
  mutations,
  type Peer,
  type Stall,
  startChild,
  syncPeer,
} from "./fanout.ts";
import { formatSummary, type Summary, summarize } from "./stats.ts";
import { bareStore } from "./storage.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const FIXTURE = path.join(ROOT, "local-backend/test/fixture/convex");
const CONCURRENT = 50;

type CommitCase = {
  name: string;
  writers: number;
  mutations: number;
  perSec: number;
  /**
   * The untimed mutations run first (concurrent fixture cases): the first
   * thousands after a start run at about half the steady rate while V8
   * compiles the hot paths and the heap grows to its working size.
   */
  warmup?: { mutations: number; perSec: number };
  ackMs: Summary;
  fsyncsPerMutation: number;
  /** The backend's CPU time per mutation: what the machine's load does not change much. */
  cpuMsPerMutation: number;
  stallMs: number;
  /** The longest stretch of the backend's own work between two timer ticks (`loopMonitor.ts`). */
  longestOnCpuMs: number;
};

type Baseline = { name: string; rowsPerSec: number; commitMs: Summary };

/** One mutation through a writer; resolves when it is answered. */
type Send = (udfPath: string, args: Record<string, unknown>) => Promise<void>;

/** A sync socket writer: Mutation messages, answered by MutationResponse. */
async function socketWriter(url: string): Promise<{ send: Send; peer: Peer }> {
  const peer = await syncPeer(url, []);
  const answered = mutations(peer);
  let requestId = 0;
  return {
    peer,
    send: (udfPath, args) => {
      const id = requestId++;
      const answer = answered(id);
      peer.send({ type: "Mutation", requestId: id, udfPath, args: [args] });
      return answer;
    },
  };
}

function httpWriter(url: string): Send {
  const client = new ConvexHttpClient(url, { logger: false });
  return async (udfPath, args) => {
    await client.mutation(makeFunctionReference<"mutation">(udfPath), args);
  };
}

/**
 * `writers` closed loops of `perWriter` mutations each; `next(writer, i)`
 * names the i-th mutation of a writer.
 */
async function closedLoops(
  backend: Child,
  name: string,
  sends: Send[],
  perWriter: number,
  next: (writer: number, i: number) => [string, Record<string, unknown>],
  warmupPerWriter = 0,
): Promise<CommitCase> {
  let warmupPerSec: number | undefined;
  if (warmupPerWriter > 0) {
    const started = performance.now();
    await Promise.all(
      sends.map(async (send, writer) => {
        for (let i = 0; i < warmupPerWriter; i++)
          await send(...next(writer, perWriter + i));
      }),
    );
    warmupPerSec =
      (sends.length * warmupPerWriter) / ((performance.now() - started) / 1000);
  }
  const ack: number[] = [];
  const syncsBefore = (await backend.request<{ count: number }>("syncs")).count;
  await backend.request("reset");
  const started = performance.now();
  await Promise.all(
    sends.map(async (send, writer) => {
      for (let i = 0; i < perWriter; i++) {
        const [udfPath, args] = next(writer, i);
        const t0 = performance.now();
        await send(udfPath, args);
        ack.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const stall = await backend.request<Stall>("stall");
  const syncs =
    (await backend.request<{ count: number }>("syncs")).count - syncsBefore;
  return {
    name,
    writers: sends.length,
    mutations: ack.length,
    perSec: ack.length / seconds,
    ...(warmupPerSec === undefined
      ? {}
      : {
          warmup: {
            mutations: sends.length * warmupPerWriter,
            perSec: warmupPerSec,
          },
        }),
    ackMs: summarize(ack),
    fsyncsPerMutation: syncs / ack.length,
    cpuMsPerMutation: stall.cpuMs / ack.length,
    stallMs: stall.maxMs,
    longestOnCpuMs: stall.longestOnCpuMs,
  };
}

/**
 * Bare better-sqlite3, an fsync per transaction, each row a message insert
 * (a document and three index rows): the floor for one writer, and for 50 rows
 * per fsync (what one group of 50 writers could at best share).
 */
function baselines(dir: string, quick: boolean): Baseline[] {
  const { db, insert } = bareStore(path.join(dir, "bare.sqlite3"));
  const run = (name: string, transactions: number, rows: number) => {
    const write = db.transaction((t: number) => {
      for (let r = 0; r < rows; r++) insert(t * rows + r);
    });
    const samples: number[] = [];
    const started = performance.now();
    for (let t = 0; t < transactions; t++) {
      const t0 = performance.now();
      write(t);
      samples.push(performance.now() - t0);
    }
    const seconds = (performance.now() - started) / 1000;
    return {
      name,
      rowsPerSec: (transactions * rows) / seconds,
      commitMs: summarize(samples),
    };
  };
  const result = [
    run(
      "bare better-sqlite3, 1 insert per fsynced transaction",
      quick ? 300 : 2000,
      1,
    ),
    run(
      `bare better-sqlite3, ${CONCURRENT} inserts per fsynced transaction`,
      quick ? 60 : 400,
      CONCURRENT,
    ),
  ];
  db.close();
  return result;
}

async function withBackend<T>(
  functions: string,
  body: (backend: Child) => Promise<T>,
): Promise<T> {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-commit-"));
  const backend = await startChild("backendProcess.ts", [functions, data]);
  try {
    return await body(backend);
  } finally {
    await backend.stop();
    fs.rmSync(data, { recursive: true, force: true });
  }
}

async function fixtureCases(quick: boolean): Promise<CommitCase[]> {
  const single = quick ? 300 : 1500;
  const each = quick ? 40 : 200;
  const send = (
    writer: number,
    i: number,
  ): [string, Record<string, unknown>] => [
    "messages:send",
    { author: `w${writer}`, body: `message ${i}` },
  ];
  // Before each concurrent case, as many untimed mutations again as the
  // single writer's: the steady rate is what is measured (the warm-up's own
  // rate is reported beside it).
  const warmupEach = single / CONCURRENT;
  return withBackend(FIXTURE, async (backend) => {
    const cases: CommitCase[] = [];
    for (const writers of [1, CONCURRENT]) {
      const sockets = await Promise.all(
        Array.from({ length: writers }, () => socketWriter(backend.url)),
      );
      cases.push(
        await closedLoops(
          backend,
          `fixture messages.send, ${writers} sync-socket writer${writers > 1 ? "s" : ""}`,
          sockets.map((s) => s.send),
          writers === 1 ? single : each,
          send,
          writers === 1 ? 0 : warmupEach,
        ),
      );
      for (const s of sockets) s.peer.close();
    }
    for (const writers of [1, CONCURRENT]) {
      cases.push(
        await closedLoops(
          backend,
          `fixture messages.send, ${writers} HTTP writer${writers > 1 ? "s" : ""}`,
          Array.from({ length: writers }, () => httpWriter(backend.url)),
          writers === 1 ? single : each,
          send,
          writers === 1 ? 0 : warmupEach,
        ),
      );
    }
    return cases;
  });
}

/**
 * The chat's `messages.send` through its rate limiter. New guests have a
 * deployment-wide burst of GUEST_CREATION_BURST (300), so each writer count
 * gets a fresh backend and a pool of guests that fits in it.
 */
async function chatCases(quick: boolean): Promise<CommitCase[]> {
  const cases: CommitCase[] = [];
  for (const [writers, guestsEach] of [
    [1, quick ? 20 : 50],
    [CONCURRENT, quick ? 2 : 5],
  ]) {
    cases.push(
      await withBackend(path.join(ROOT, "convex"), async (backend) => {
        const sockets = await Promise.all(
          Array.from({ length: writers }, () => socketWriter(backend.url)),
        );
        const guests = await Promise.all(
          sockets.map(async ({ send }) => {
            const pool = Array.from({ length: guestsEach }, () =>
              crypto.randomUUID(),
            );
            for (const sessionId of pool)
              await send("sessions:start", { sessionId });
            return pool;
          }),
        );
        const result = await closedLoops(
          backend,
          `chat messages.send (rate limiter, ${guestsEach} guests each), ${writers} writer${writers > 1 ? "s" : ""}`,
          sockets.map((s) => s.send),
          guestsEach * MESSAGE_BURST,
          (writer, i) => [
            "messages:send",
            {
              sessionId: guests[writer][Math.floor(i / MESSAGE_BURST)],
              body: `message ${writer} ${i}`,
            },
          ],
        );
        for (const s of sockets) s.peer.close();
        return result;
      }),
    );
  }
  return cases;
}

export async function commitBenchmarks(options: {
  quick: boolean;
}): Promise<{ baselines: Baseline[]; cases: CommitCase[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-bare-"));
  let floor: Baseline[];
  try {
    floor = baselines(dir, options.quick);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const cases = [
    ...(await fixtureCases(options.quick)),
    ...(await chatCases(options.quick)),
  ];
  console.log(
    "\ngroup commit: durable mutations, each writer a closed loop (times in ms)",
  );
  for (const b of floor) {
    console.log(
      formatSummary(
        `  ${b.name}: ${b.rowsPerSec.toFixed(0)} rows/s; commit`,
        b.commitMs,
      ),
    );
  }
  for (const c of cases) {
    console.log(
      formatSummary(`  ${c.name}: ${c.perSec.toFixed(0)}/s; ack`, c.ackMs) +
        `  fsyncs/mutation ${c.fsyncsPerMutation.toFixed(2)}, backend CPU/mutation ${c.cpuMsPerMutation.toFixed(3)} ms, longest stall ${c.stallMs.toFixed(1)} ms, longest stretch on a CPU ${c.longestOnCpuMs.toFixed(1)} ms` +
        (c.warmup === undefined
          ? ""
          : `; after ${c.warmup.mutations} untimed at ${c.warmup.perSec.toFixed(0)}/s`),
    );
  }
  const json = JSON.stringify({ commit: { baselines: floor, cases } }, null, 2);
  console.log(`\nJSON:\n${json}`);
  return { baselines: floor, cases };
}
