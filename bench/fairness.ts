/**
 * Fairness and backpressure (issue 7, point 6): what one greedy client costs
 * a healthy one. The healthy client is a bare sync socket subscribed to the
 * newest items of its own group (`items:take`); each round it inserts an item
 * carrying a marker and waits for the Transition that shows it (send to
 * visible). Its rounds are measured, on one backend in its own process:
 * - alone: the baseline, in the same run;
 * - while another socket adds 1,000, then 10,000 subscriptions in one
 *   ModifyQuerySet (distinct `items:range` queries over one group) and a
 *   second writer keeps inserting into that group, so that every one of them
 *   is invalidated by each of its commits; the writer goes on after the
 *   healthy rounds until the greedy socket's first Transition (30 s at
 *   most), which tells whether it gets one at all under such a writer;
 * - while a socket holds `messages:page` with `numItems: 1e9` over 20,000
 *   messages that a writer keeps adding to (each re-run reads all of them);
 * - while ten sockets that stopped reading hold a 1 MB result each (distinct
 *   queries, so no two share a frame) that a writer keeps changing: the
 *   backend's RSS before, at its peak and after, and how those sockets were
 *   closed.
 * Each case reports the healthy client's p50 / p99 / max beside the baseline,
 * what the greedy side got done meanwhile, and the backend's longest
 * event-loop stall (`loopMonitor.ts`).
 *
 * Usage: `npm run bench -- --only=fairness [--quick]` (bench/run.ts).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  type Child,
  mutations,
  type Peer,
  startChild,
  type Stall,
  syncPeer,
} from "./fanout.ts";
import { formatSummary, rssMiB, summarize, type Summary } from "./stats.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const FIXTURE = path.join(ROOT, "local-backend/test/fixture/convex");

export type FairnessCase = {
  name: string;
  healthy: Summary;
  /** The greedy side's progress while the healthy rounds ran. */
  greedy: Record<string, number | string>;
  stallMs: number;
  /** Of the longest stall, the main thread's time on a CPU; the longest GC pause (`loopMonitor.ts`). */
  onCpuMs: number;
  gcMaxMs: number;
  rssMiB?: { before: number; peak: number; after: number };
};

/** The healthy client: a closed loop of insert, then wait to see it. */
async function healthyClient(backend: Child) {
  const peer = await syncPeer(backend.url, [
    // Its newest items: the same cost in every case, however many it added.
    {
      udfPath: "items:take",
      args: { group: "healthy", count: 5, order: "desc" },
    },
  ]);
  let rank = 0;
  return {
    async rounds(count: number): Promise<number[]> {
      const times: number[] = [];
      for (let i = 0; i < count; i++) {
        const marker = `healthy-${rank}-${crypto.randomUUID().slice(0, 8)}`;
        const seen = peer.expect(marker);
        const start = performance.now();
        peer.send({
          type: "Mutation",
          requestId: rank,
          udfPath: "items:insert",
          args: [{ group: "healthy", rank: rank++, value: marker }],
        });
        await seen;
        times.push(performance.now() - start);
      }
      return times;
    },
    close: () => peer.close(),
  };
}

type Healthy = Awaited<ReturnType<typeof healthyClient>>;

/** Runs mutations one after another on a socket of their own (a case's data). */
async function runInOrder(
  backend: Child,
  calls: { udfPath: string; args: unknown }[],
): Promise<void> {
  const peer = await syncPeer(backend.url, []);
  const answered = mutations(peer);
  for (const [requestId, { udfPath, args }] of calls.entries()) {
    const answer = answered(requestId);
    peer.send({ type: "Mutation", requestId, udfPath, args: [args] });
    await answer;
  }
  peer.close();
}

/** A closed loop of mutations on its own socket until `stop`; resolves with how many committed. */
function writer(
  peer: Peer,
  mutation: (i: number) => { udfPath: string; args: unknown },
) {
  const answered = mutations(peer);
  let running = true;
  let done = 0;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const { udfPath, args } = mutation(i);
      const answer = answered(i);
      peer.send({ type: "Mutation", requestId: i, udfPath, args: [args] });
      await answer;
      done++;
    }
  })();
  return {
    async stop(): Promise<number> {
      running = false;
      await loop;
      return done;
    },
  };
}

/** Transitions a socket has received since `count` was made. */
function transitions(peer: Peer): () => number {
  let seen = 0;
  peer.ws.on("message", (data: Buffer) => {
    if (data.subarray(0, 20).toString("latin1").includes('"Transition"'))
      seen++;
  });
  return () => seen;
}

async function manySubscriptions(
  backend: Child,
  healthy: Healthy,
  subscriptions: number,
  rounds: number,
): Promise<FairnessCase> {
  // A group of its own: the case before does not leave it items to read.
  const group = `heavy-${subscriptions}`;
  const greedy = await syncPeer(backend.url, []);
  const received = transitions(greedy);
  const heavyWriter = await syncPeer(backend.url, []);
  await backend.request("reset");
  const subscribed = performance.now();
  const firstTransition = greedy.expect('"Transition"');
  greedy.send({
    type: "ModifyQuerySet",
    baseVersion: 0,
    newVersion: 1,
    modifications: Array.from({ length: subscriptions }, (_, queryId) => ({
      type: "Add",
      queryId,
      udfPath: "items:range",
      // Distinct arguments: each is a query of its own, all over the group.
      args: [{ group, above: -1 - queryId }],
    })),
  });
  const writes = writer(heavyWriter, (i) => ({
    udfPath: "items:insert",
    args: { group, rank: i, value: i },
  }));
  let allResultsMs = NaN;
  void firstTransition.then(
    () => (allResultsMs = performance.now() - subscribed),
    () => undefined,
  );
  const times = await healthy.rounds(rounds);
  // The writer goes on until the greedy socket has its first Transition
  // (at most the 30 s `expect` allows): whether it ever gets one under it.
  await firstTransition.catch(() => undefined);
  const committed = await writes.stop();
  const stall = await backend.request<Stall>("stall");
  greedy.close();
  heavyWriter.close();
  return {
    name: `one socket with ${subscriptions.toLocaleString("en-US")} subscriptions, each re-run by another writer's every commit`,
    healthy: summarize(times),
    greedy: {
      "its first Transition after subscribing, ms": Number(
        allResultsMs.toFixed(0),
      ),
      "its Transitions meanwhile (until its first, at least)": received(),
      "the writer's commits meanwhile": committed,
    },
    ...stallOf(stall),
  };
}

async function hugePage(
  backend: Child,
  healthy: Healthy,
  messages: number,
  rounds: number,
): Promise<FairnessCase> {
  await runInOrder(
    backend,
    Array.from({ length: Math.ceil(messages / 5_000) }, (_, i) => ({
      udfPath: "limits:fill",
      args: {
        author: "page",
        count: Math.min(5_000, messages - i * 5_000),
        size: 20,
      },
    })),
  );
  const greedy = await syncPeer(backend.url, [
    {
      udfPath: "messages:page",
      args: { paginationOpts: { numItems: 1e9, cursor: null } },
    },
  ]);
  const received = transitions(greedy);
  let lastFrameBytes = 0;
  greedy.ws.on("message", (data: Buffer) => (lastFrameBytes = data.length));
  const sender = await syncPeer(backend.url, []);
  await backend.request("reset");
  const writes = writer(sender, (i) => ({
    udfPath: "messages:send",
    args: { author: "page", body: `more ${i}` },
  }));
  const times = await healthy.rounds(rounds);
  const committed = await writes.stop();
  const stall = await backend.request<Stall>("stall");
  greedy.close();
  sender.close();
  return {
    name: `one socket holding messages:page with numItems 1e9 over ${messages.toLocaleString("en-US")} messages a writer keeps adding to`,
    healthy: summarize(times),
    greedy: {
      "its Transitions meanwhile": received(),
      "its last frame, KiB": Math.round(lastFrameBytes / 1024),
      "the writer's commits meanwhile": committed,
    },
    ...stallOf(stall),
  };
}

async function stalledReaders(
  backend: Child,
  healthy: Healthy,
  readers: number,
  rounds: number,
): Promise<FairnessCase> {
  // 8 items of 128 KiB: a 1 MiB result.
  await runInOrder(
    backend,
    Array.from({ length: 8 }, (_, rank) => ({
      udfPath: "items:insert",
      args: { group: "slow", rank, value: "x".repeat(128 * 1024) },
    })),
  );
  const stalled = await Promise.all(
    Array.from({ length: readers }, (_, i) =>
      syncPeer(backend.url, [
        // Distinct arguments, the same result: no two share a frame.
        { udfPath: "items:range", args: { group: "slow", above: -1 - i } },
      ]),
    ),
  );
  const closes: string[] = [];
  for (const peer of stalled) {
    peer.ws.on("close", (code: number, reason: Buffer) =>
      closes.push(`${code} ${reason.toString().split(":")[0]}`),
    );
    peer.ws.pause();
  }
  const sender = await syncPeer(backend.url, []);
  const before = rssMiB(backend.pid);
  let peak = before;
  const sampler = setInterval(
    () => (peak = Math.max(peak, rssMiB(backend.pid))),
    50,
  );
  await backend.request("reset");
  const writes = writer(sender, (i) => ({
    udfPath: "items:insert",
    args: { group: "slow", rank: 100 + i, value: i },
  }));
  const times = await healthy.rounds(rounds);
  const committed = await writes.stop();
  const stall = await backend.request<Stall>("stall");
  // Read what the stalled sockets were sent, then their close frames.
  for (const peer of stalled) peer.ws.resume();
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  clearInterval(sampler);
  const after = rssMiB(backend.pid);
  const closedBy = [...new Set(closes)].join(", ") || "none closed";
  for (const peer of stalled) peer.close();
  sender.close();
  return {
    name: `${readers} sockets that stopped reading, each holding a distinct 1 MiB result a writer keeps changing`,
    healthy: summarize(times),
    greedy: {
      "closed by the backend": `${closes.length} of ${readers} (${closedBy})`,
      "the writer's commits meanwhile": committed,
    },
    ...stallOf(stall),
    rssMiB: {
      before: Math.round(before),
      peak: Math.round(peak),
      after: Math.round(after),
    },
  };
}

/** A case's stall figures, from the backend's `LoopMonitor`. */
function stallOf(
  stall: Stall,
): Pick<FairnessCase, "stallMs" | "onCpuMs" | "gcMaxMs"> {
  return {
    stallMs: stall.maxMs,
    onCpuMs: stall.onCpuMs,
    gcMaxMs: stall.gcMaxMs,
  };
}

/**
 * `BENCH_FAIRNESS_CASES=page,stalled`: only those greedy cases (of
 * subscriptions, page, stalled), e.g. to profile one (`BENCH_CPU_PROF`).
 */
const CASES = process.env.BENCH_FAIRNESS_CASES?.split(",");
const runs = (greedy: string) => CASES === undefined || CASES.includes(greedy);

export async function fairnessBenchmarks(options: {
  quick: boolean;
}): Promise<FairnessCase[]> {
  const rounds = options.quick ? 50 : 200;
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-fairness-"));
  const backend = await startChild("backendProcess.ts", [FIXTURE, data]);
  const cases: FairnessCase[] = [];
  console.log(
    `\nfairness: a healthy client's insert until it sees it (send to visible) while another client is greedy; ${rounds} rounds per case; ms`,
  );
  try {
    const healthy = await healthyClient(backend);
    await healthy.rounds(10);
    const alone = async (label: string) => {
      await backend.request("reset");
      const times = await healthy.rounds(rounds);
      const stall = await backend.request<Stall>("stall");
      cases.push({
        name: `baseline: the healthy client alone (${label})`,
        healthy: summarize(times),
        greedy: {},
        ...stallOf(stall),
      });
    };
    await alone("first");
    if (runs("subscriptions"))
      for (const subscriptions of options.quick ? [1_000] : [1_000, 10_000])
        cases.push(
          await manySubscriptions(backend, healthy, subscriptions, rounds),
        );
    if (runs("page"))
      cases.push(
        await hugePage(
          backend,
          healthy,
          options.quick ? 5_000 : 20_000,
          rounds,
        ),
      );
    if (runs("stalled"))
      cases.push(await stalledReaders(backend, healthy, 10, rounds));
    await alone("last");
    healthy.close();
  } finally {
    await backend.stop();
    fs.rmSync(data, { recursive: true, force: true });
  }
  const baseline = cases[0].healthy;
  for (const c of cases) {
    console.log(formatSummary(c.name, c.healthy));
    const ratio = `p50 ${(c.healthy.p50 / baseline.p50).toFixed(2)}x, p99 ${(c.healthy.p99 / baseline.p99).toFixed(2)}x the first baseline`;
    const greedy = Object.entries(c.greedy)
      .map(([k, v]) => `${k}: ${v}`)
      .join("; ");
    const rss =
      c.rssMiB === undefined
        ? ""
        : `; backend RSS ${c.rssMiB.before} -> peak ${c.rssMiB.peak} -> ${c.rssMiB.after} MiB`;
    console.log(
      `  ${ratio}; longest event-loop stall ${c.stallMs.toFixed(1)} ms (${c.onCpuMs.toFixed(1)} on a CPU; longest GC ${c.gcMaxMs.toFixed(1)})${greedy === "" ? "" : `; ${greedy}`}${rss}`,
    );
  }
  console.log(`\nJSON:\n${JSON.stringify({ fairness: cases }, null, 2)}`);
  return cases;
}
