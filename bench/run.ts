/**
 * `npm run bench`: latency and memory of the embedded backend running the chat's
 * real functions, driven by the real `ConvexClient` over loopback WebSockets.
 *
 * Cases (each labelled with its size):
 * - mutation round trip: `await client.mutation(messages.send)`, which resolves
 *   only after the Transition that makes the write visible to the sender;
 * - subscription update: from the start of a send until each of N subscribed
 *   clients' `messages.list` subscription shows the new message (ConvexHttpClient
 *   stands apart: it measures one-shot query latency);
 * - memory: backend process RSS and heap after inserting M messages;
 * - fan-out (bench/fanout.ts): identical and idle subscriptions beside a raw
 *   `ws` broadcast floor, with event-loop stalls, and the chat's real
 *   functions with 100 and 1,000 open pages (distinct sessions).
 *
 * - storage (bench/storage.ts): cold start, RSS, reload and insert cost on a
 *   generated chat folder of 100k and 1M messages, beside bare better-sqlite3.
 * - group commit (bench/commit.ts): durable mutations/s with 1 and 50
 *   concurrent writers, beside bare better-sqlite3 fsync loops.
 *
 * - fairness (bench/fairness.ts): a healthy client's send to visible while
 *   another holds 1,000 or 10,000 subscriptions, a page of `numItems: 1e9`,
 *   or ten sockets that stopped reading (with the backend's RSS).
 *
 * - runaway (bench/runaway.ts): other clients' latency while a runaway query
 *   runs, and the chat's validation of huge inputs.
 *
 * - memory (bench/subscriptionMemory.ts): the backend's heap per subscription,
 *   20,000 distinct or identical queries on one socket, beside a bare Map
 *   holding the same query set.
 *
 * - sign-up (bench/signUpLatency.ts, only with `--only=signup`: it needs
 *   Chromium): a guest's click on "Sign up" until the reloaded page shows
 *   their old messages as theirs, beside a guest's plain reload.
 *
 * Usage: npm run bench [-- --quick] [-- --only=clients|chat|identical|fanout|fairness|storage|runaway|commit|memory|signup] [-- --json=path]
 * (`clients` is the ConvexClient cases above, `chat` only the open-pages case of fan-out,
 * `identical` only its identical-subscriptions cases).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import type {
  FunctionArgs,
  FunctionReference,
  FunctionReturnType,
} from "convex/server";
import { MESSAGE_BURST } from "../convex/limits.ts";
import { chatApi as api } from "../e2e/helpers/chatApi.ts";
import type { SessionId } from "convex-helpers/server/sessions";
import WebSocket from "ws";
import { spawnCliBackend } from "./cliBackend.ts";
import { commitBenchmarks } from "./commit.ts";
import { fairnessBenchmarks } from "./fairness.ts";
import { fanOutBenchmarks } from "./fanout.ts";
import { runawayBench } from "./runaway.ts";
import { signUpBenchmarks } from "./signUpLatency.ts";
import { storageBenchmarks } from "./storage.ts";
import { subscriptionMemoryBenchmarks } from "./subscriptionMemory.ts";
import { formatSummary, rssMiB, summarize } from "./stats.ts";

const QUICK = process.argv.includes("--quick");
/**
 * `--only=fanout` runs just the fan-out cases (bench/fanout.ts), `--only=identical`
 * just its identical subscriptions, `--only=chat`
 * just its chat case (real functions, 100 and 1,000 open pages).
 */
const ONLY = process.argv.find((a) => a.startsWith("--only="))?.slice(7);
/** `--json=path` also writes the fan-out results there. */
const JSON_PATH = process.argv.find((a) => a.startsWith("--json="))?.slice(7);
const ROUNDS = QUICK ? 40 : 200;
const TIMEOUT_MS = 10_000;
/** The page's first page size (src/components/MessageList.tsx). */
const PAGE_SIZE = 30;

function sessionId(): SessionId {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}` as SessionId;
}

/**
 * Sends chat messages from a pool of guests, a new one every MESSAGE_BURST
 * messages, so the chat's per-user rate limit (`convex/limits.ts`) never
 * refuses a benchmark message: the cases measure the backend, not the limiter.
 */
function senderPool(
  client: ConvexClient | ConvexHttpClient,
): (body: string) => Promise<unknown> {
  let current: SessionId | null = null;
  let sent = 0;
  return async (body) => {
    if (current === null || sent >= MESSAGE_BURST) {
      current = sessionId();
      sent = 0;
      await mutate(client, api.sessions.start, { sessionId: current });
    }
    sent++;
    return mutate(client, api.messages.send, { sessionId: current, body });
  };
}

/** One mutation through either client (their `mutation` signatures differ only in options). */
function mutate<M extends FunctionReference<"mutation">>(
  client: ConvexClient | ConvexHttpClient,
  mutation: M,
  args: FunctionArgs<M>,
): Promise<FunctionReturnType<M>> {
  return client instanceof ConvexClient
    ? client.mutation(mutation, args)
    : client.mutation(mutation, args);
}

type Subscriber = {
  client: ConvexClient;
  latest: Set<string>;
  waiters: Map<string, () => void>;
};

function subscribe(url: string): Subscriber {
  const client = new ConvexClient(url, {
    webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
  });
  const subscriber: Subscriber = {
    client,
    latest: new Set(),
    waiters: new Map(),
  };
  // The same paginated subscription the page makes (`usePaginatedQuery`): the
  // client splits a first page that grows past twice its size, so re-run cost
  // stays bounded as messages arrive.
  client.onPaginatedUpdate_experimental(
    api.messages.list,
    {} as FunctionArgs<typeof api.messages.list>,
    { initialNumItems: PAGE_SIZE },
    (update) => {
      // convex 1.48 types the callback's argument as a PaginationResult, but
      // passes the paginated-query state { results, status, loadMore }.
      const { results } = update as unknown as { results: { body: string }[] };
      subscriber.latest = new Set(results.map((m) => m.body));
      for (const [body, resolve] of subscriber.waiters) {
        if (subscriber.latest.has(body)) {
          subscriber.waiters.delete(body);
          resolve();
        }
      }
    },
  );
  return subscriber;
}

function seen(subscriber: Subscriber, body: string): Promise<void> {
  if (subscriber.latest.has(body)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(new Error(`update for "${body}" not seen in ${TIMEOUT_MS} ms`)),
      TIMEOUT_MS,
    );
    subscriber.waiters.set(body, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function fanOut(url: string, clients: number): Promise<void> {
  const sender = new ConvexClient(url, {
    webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
  });
  const send = senderPool(sender);
  const subscribers = Array.from({ length: clients }, () => subscribe(url));
  // Every subscriber has its first result once it sees the warm-up message.
  const warm = `warm-up ${clients}`;
  await send(warm);
  await Promise.all(subscribers.map((s) => seen(s, warm)));

  const roundTrips: number[] = [];
  const perClient: number[] = [];
  const allClients: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const body = `bench ${clients} ${i}`;
    const start = performance.now();
    const arrivals = subscribers.map((s) =>
      seen(s, body).then(() => performance.now() - start),
    );
    await send(body);
    roundTrips.push(performance.now() - start);
    const times = await Promise.all(arrivals);
    perClient.push(...times);
    allClients.push(Math.max(...times));
  }
  console.log(
    formatSummary(
      `mutation round trip (await mutation), ${clients} subscribed clients`,
      summarize(roundTrips),
    ),
  );
  console.log(
    formatSummary(
      `subscription update, each of ${clients} clients`,
      summarize(perClient),
    ),
  );
  console.log(
    formatSummary(
      `subscription update, last of ${clients} clients`,
      summarize(allClients),
    ),
  );
  await Promise.all([
    sender.close(),
    ...subscribers.map((s) => s.client.close()),
  ]);
}

async function httpQueries(url: string): Promise<void> {
  const client = new ConvexHttpClient(url);
  const times: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const start = performance.now();
    await client.query(api.messages.list, {
      paginationOpts: { numItems: 20, cursor: null },
    });
    times.push(performance.now() - start);
  }
  console.log(
    formatSummary(
      "HTTP query messages.list (20 items), 1 client",
      summarize(times),
    ),
  );
}

async function memory(
  url: string,
  pid: number,
  messages: number,
): Promise<void> {
  const send = senderPool(new ConvexHttpClient(url));
  const body = "x".repeat(200);
  const before = rssMiB(pid);
  const start = performance.now();
  for (let i = 0; i < messages; i++) {
    await send(`${i} ${body}`);
  }
  const seconds = (performance.now() - start) / 1000;
  const after = rssMiB(pid);
  console.log(
    `backend RSS ${before.toFixed(1)} MiB -> ${after.toFixed(1)} MiB after ${messages} more messages of ~200 chars; ` +
      `sequential durable HTTP mutations: ${(messages / seconds).toFixed(0)}/s`,
  );
}

async function main(): Promise<void> {
  if (ONLY === "signup") await signUpBenchmarks(QUICK ? 5 : undefined);
  if (ONLY === undefined || ONLY === "clients") await chatCases();
  if (ONLY === undefined || ONLY === "storage")
    await storageBenchmarks({ quick: QUICK });
  if (ONLY === undefined || ONLY === "commit")
    await commitBenchmarks({ quick: QUICK });
  if (
    ONLY === undefined ||
    ONLY === "fanout" ||
    ONLY === "chat" ||
    ONLY === "identical"
  )
    await fanOutBenchmarks({
      quick: QUICK,
      only: ONLY === "chat" || ONLY === "identical" ? ONLY : undefined,
      json: JSON_PATH,
    });
  if (ONLY === undefined || ONLY === "fairness")
    await fairnessBenchmarks({ quick: QUICK });
  if (ONLY === undefined || ONLY === "runaway") await runawayBench();
  if (ONLY === undefined || ONLY === "memory")
    await subscriptionMemoryBenchmarks({ quick: QUICK });
}

async function chatCases(): Promise<void> {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-"));
  const { url, child } = await spawnCliBackend(data);
  console.log(
    `machine: ${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, Node ${process.version}`,
  );
  console.log(
    `backend in its own process; rounds per case: ${ROUNDS}; times in ms\n`,
  );
  try {
    await fanOut(url, 1);
    await fanOut(url, 10);
    await fanOut(url, QUICK ? 50 : 100);
    await httpQueries(url);
    // At most 100 new guests here: the chat admits 300 at once (convex/limits.ts).
    await memory(url, child.pid!, QUICK ? 250 : 500);
  } finally {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
    fs.rmSync(data, { recursive: true, force: true });
  }
}

await main();
