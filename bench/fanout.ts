/**
 * Fan-out benchmarks (issue 7), each case beside a raw `ws` broadcast of the
 * same frames measured in the same run (`rawBroadcast.ts`):
 * - identical subscriptions: N sockets subscribed to the chat's first page
 *   (`messages.list`, as `usePaginatedQuery` asks for it, and split as it
 *   splits a page past twice its size: `PageSplits`), closed loop: one
 *   `messages.send`, wait until all N have a frame with the new message, repeat;
 * - idle subscriptions: 20,000 subscriptions over 1,000 channels (200 sockets
 *   of 100 fixture `items.range` queries, 20 per channel), one insert into one
 *   channel per round: insert to that channel's last Transition, and how many
 *   frames the 180 other sockets got (should be none);
 * - the chat's real functions: N open pages with distinct sessions, each
 *   subscribed to `users.me` and the first page of `messages.list`, one
 *   sender in a closed loop rotating over a pool of sessions (`chatCase`);
 * - for every case, the backend's (and the floor's) longest event-loop stall
 *   while it ran (`monitorEventLoopDelay`, 2 ms resolution), and its CPU time
 *   per delivery (the backend's includes running the round's mutation and
 *   query): on a shared machine wall times stretch with the load, CPU time
 *   much less;
 * - for the identical subscriptions, a second reference beside the floor:
 *   the same broadcast after one fsync per round (`rawBroadcast.ts` with a
 *   file), since each of our rounds waits for its commit's fsync; the ratio
 *   to the raw floor stays the issue's target.
 *
 * Subscribers on both sides are bare sockets that only look for the round's
 * marker in the frame text, so receiving costs the same on both sides and the
 * difference is the server's.
 *
 * Usage: called from bench/run.ts (`npm run bench`, `-- --quick`, `-- --only=fanout`,
 * `-- --only=chat` for the chat case alone, `-- --only=identical` for the
 * identical subscriptions alone); `BENCH_CPU_PROF=dir` profiles the children.
 */
import { fork, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { MESSAGE_BURST } from "../convex/limits.ts";
import type { LoopStall as Stall } from "./loopMonitor.ts";
import { formatSummary, summarize, type Summary } from "./stats.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const CLIENT_VERSION = "1.48.0";
const TIMEOUT_MS = 30_000;

export type { LoopStall as Stall } from "./loopMonitor.ts";

export type Child = {
  url: string;
  /** The child's process id (its RSS is read from /proc). */
  pid: number;
  request<T>(type: string): Promise<T>;
  stop(): Promise<void>;
};

/** Children still running, ended if the benchmark itself fails. */
const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of children) child.kill();
});

/**
 * `BENCH_CPU_PROF=dir`: every child (backend and floor) writes a V8 CPU
 * profile into `dir` when it exits (`--cpu-prof`), to see where a case's
 * time goes (open the `.cpuprofile` in Chrome DevTools).
 */
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF;
/**
 * `BENCH_CPU_PROF_INTERVAL=us`: the sampling interval (V8's default, 1,000
 * us, is too coarse to see where one event-loop turn ends: 200 does).
 */
const CPU_PROF_INTERVAL_US = Number(
  process.env.BENCH_CPU_PROF_INTERVAL ?? 1000,
);

export async function startChild(
  script: string,
  args: string[],
): Promise<Child> {
  const child: ChildProcess = fork(path.join(ROOT, "bench", script), args, {
    cwd: ROOT,
    execArgv: [
      "--import",
      "tsx",
      ...(CPU_PROF_DIR === undefined
        ? []
        : [
            "--cpu-prof",
            `--cpu-prof-dir=${path.resolve(CPU_PROF_DIR)}`,
            `--cpu-prof-interval=${CPU_PROF_INTERVAL_US}`,
          ]),
    ],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  const replies: ((message: { type: string }) => void)[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${script} exited ${code}`)));
    child.on("message", (message: { type: string; url?: string }) => {
      if (message.type === "ready") resolve(message.url!);
      else replies.shift()?.(message);
    });
  });
  return {
    url,
    pid: child.pid!,
    request<T>(type: string) {
      return new Promise<T>((resolve) => {
        replies.push(resolve as (message: { type: string }) => void);
        child.send({ type });
      });
    },
    stop() {
      return new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.send({ type: "stop" });
      });
    },
  };
}

/** A bare socket that resolves when a frame contains the marker it waits for. */
export class Peer {
  readonly ws: WebSocket;
  frames = 0;
  #marker: string | null = null;
  #resolve: ((text: string) => void) | null = null;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data: Buffer) => {
      this.frames++;
      if (this.#marker === null) return;
      const text = data.toString("utf8");
      if (!text.includes(this.#marker)) return;
      const resolve = this.#resolve!;
      this.#marker = null;
      this.#resolve = null;
      resolve(text);
    });
  }

  static open(url: string): Promise<Peer> {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      ws.once("open", () => resolve(new Peer(ws)));
      ws.once("error", reject);
    });
  }

  /** Resolves with the first frame (from now on) that contains `marker`. */
  expect(marker: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`"${marker}" not seen in ${TIMEOUT_MS} ms`)),
        TIMEOUT_MS,
      );
      this.#marker = marker;
      this.#resolve = (text) => {
        clearTimeout(timer);
        resolve(text);
      };
    });
  }

  send(message: unknown): void {
    this.ws.send(JSON.stringify(message));
  }

  close(): void {
    this.ws.terminate();
  }
}

const MARKER = /m\d+-[0-9a-f]{8}/;
/** A frame the backend sent, with its marker (the newest message's) replaced. */
const withMarker = (frame: string, marker: string) =>
  frame.replace(MARKER, marker);

const syncUrl = (url: string) =>
  `${url.replace(/^http/, "ws")}/api/${CLIENT_VERSION}/sync`;

export async function syncPeer(
  url: string,
  queries: { udfPath: string; args: unknown }[],
): Promise<Peer> {
  const peer = await Peer.open(syncUrl(url));
  // Only a socket with queries is sure to get a Transition now.
  const first = queries.length > 0 ? peer.expect('"Transition"') : null;
  peer.send({
    type: "Connect",
    sessionId: crypto.randomUUID(),
    connectionCount: 0,
    lastCloseReason: "InitialConnect",
  });
  if (queries.length > 0) {
    peer.send({
      type: "ModifyQuerySet",
      baseVersion: 0,
      newVersion: 1,
      modifications: queries.map((q, queryId) => ({
        type: "Add",
        queryId,
        udfPath: q.udfPath,
        args: [q.args],
      })),
    });
    await first;
  }
  return peer;
}

/** Opens `count` peers, 50 at a time. */
async function openMany(
  count: number,
  open: (i: number) => Promise<Peer>,
): Promise<Peer[]> {
  const peers: Peer[] = [];
  for (let i = 0; i < count; i += 50) {
    const batch = Array.from({ length: Math.min(50, count - i) }, (_, j) =>
      open(i + j),
    );
    peers.push(...(await Promise.all(batch)));
  }
  return peers;
}

type RoundResult = {
  perPeer: number[];
  last: number[];
  /** From the reference event (the commit's MutationResponse) to the last peer's frame. */
  sinceCommit: number[];
  seconds: number;
};

/**
 * The floor for a case: a raw `ws` server broadcasting the very frames the
 * backend sent (each with this round's marker) to as many sockets, in the
 * same closed loop, with its longest event-loop stall; with `durableFile`,
 * the same after one fsync per round.
 */
async function rawFloor(
  sockets: number,
  rounds: number,
  frames: string[],
  /** A file to append and fdatasync once per round before broadcasting (rawBroadcast.ts). */
  durableFile?: string,
): Promise<{
  floor: Awaited<ReturnType<typeof closedLoop>>;
  floorStall: Stall;
}> {
  const raw = await startChild(
    "rawBroadcast.ts",
    durableFile === undefined ? [] : [durableFile],
  );
  const rawPeers = await openMany(sockets, () => Peer.open(raw.url));
  const rawSender = await Peer.open(raw.url);
  await raw.request("reset");
  const floor = await closedLoop(rawPeers, rounds, (round, marker) =>
    rawSender.send({ type: "send", frame: withMarker(frames[round], marker) }),
  );
  const floorStall = await raw.request<Stall>("stall");
  for (const peer of [...rawPeers, rawSender]) peer.close();
  await raw.stop();
  return { floor, floorStall };
}

/**
 * Closed loop: `rounds` times, start a round and wait for every peer's frame
 * with its marker. `committedAt` gives the time the round's mutation was
 * answered (its commit is durable by then), when there is one.
 */
async function closedLoop(
  peers: Peer[],
  rounds: number,
  start: (round: number, marker: string) => void,
  onFrame?: (round: number, text: string) => void,
  committedAt?: () => number,
  /** Runs after each round, outside its time (`PageSplits.splitIfDue`). */
  between?: () => Promise<void>,
): Promise<RoundResult> {
  const perPeer: number[] = [];
  const last: number[] = [];
  const sinceCommit: number[] = [];
  let total = 0;
  for (let round = 0; round < rounds; round++) {
    const marker = `m${round}-${crypto.randomUUID().slice(0, 8)}`;
    const arrivals = peers.map((peer, i) =>
      peer.expect(marker).then((text) => {
        if (i === 0) onFrame?.(round, text);
        return performance.now();
      }),
    );
    const t0 = performance.now();
    start(round, marker);
    const at = await Promise.all(arrivals);
    const times = at.map((t) => t - t0);
    perPeer.push(...times);
    const slowest = Math.max(...times);
    last.push(slowest);
    if (committedAt !== undefined)
      sinceCommit.push(Math.max(...at) - committedAt());
    total += slowest;
    await between?.();
  }
  return { perPeer, last, sinceCommit, seconds: total / 1000 };
}

/** The sender's latest MutationResponse arrival time. */
function answers(sender: Peer): () => number {
  let at = 0;
  sender.ws.on("message", (data: Buffer) => {
    if (data.toString("utf8").startsWith('{"type":"MutationResponse"'))
      at = performance.now();
  });
  return () => at;
}

export type FanOutCase = {
  name: string;
  subscribers: number;
  ours: {
    perPeer: Summary;
    last: Summary;
    /** The mutation's answer (commit durable) to the last subscriber's frame. */
    commitToLast: Summary;
    deliveriesPerSec: number;
  };
  floor: { perPeer: Summary; last: Summary; deliveriesPerSec: number };
  /**
   * A second reference, beside the floor (which stays the issue's target):
   * the floor with one fsync per round before its broadcast, the durability
   * wait every round of ours has too (identical subscriptions only).
   */
  fsyncFloor?: { perPeer: Summary; last: Summary; deliveriesPerSec: number };
  stallMs: { ours: number; floor: number };
  /**
   * Of each side's longest stall, the time the process was on a CPU, and its
   * longest stretch of own work between two timer ticks (`loopMonitor.ts`):
   * on this 2-core machine the load generator competes for the cores.
   */
  onCpuMs: {
    ours: { ofLongestStall: number; longest: number; gcMax: number };
    floor: { ofLongestStall: number; longest: number; gcMax: number };
  };
  /** Process CPU time (user + system) over the measured rounds, per delivery. */
  cpuUsPerDelivery: { ours: number; floor: number };
  extra?: Record<string, number>;
};

/**
 * What `usePaginatedQuery` does with a page that grew (convex 1.48
 * `use_paginated_query.ts`): a subscribed page keeps its end cursor, so the
 * first page gains every new message; once a result holds more than twice
 * `initialNumItems` (or the server asks for a split) and has a
 * `splitCursor`, the client adds two queries, up to the split cursor and from
 * it to the page's end, and removes the page once both have results. Bare
 * peers do the same here, or the first page would grow by a message a round
 * for good and later rounds would re-run and ship pages no browser keeps.
 * Every peer holds the very same page (one query, the same arguments), so the
 * first peer's frame decides for all, and the split runs between two rounds,
 * outside their time.
 */
class PageSplits {
  #peers: Peer[];
  #pageId: number;
  #nextId: number;
  /** Every peer's query set version (they change in step). */
  #version = 1;
  #paginationOpts: Record<string, unknown>;
  #due: { splitCursor: string; continueCursor: string } | null = null;
  /** Splits made so far. */
  count = 0;

  constructor(
    peers: Peer[],
    page: { queryId: number; paginationOpts: Record<string, unknown> },
    nextQueryId: number,
  ) {
    this.#peers = peers;
    this.#pageId = page.queryId;
    this.#paginationOpts = page.paginationOpts;
    this.#nextId = nextQueryId;
  }

  /** Looks at a frame of the first peer's: does the page's result call for a split? */
  inspect(text: string): void {
    const frame = JSON.parse(text) as {
      modifications?: {
        type: string;
        queryId: number;
        value?: {
          page: unknown[];
          splitCursor: string | null;
          continueCursor: string;
          pageStatus?: string | null;
        };
      }[];
    };
    for (const m of frame.modifications ?? []) {
      if (m.type !== "QueryUpdated" || m.queryId !== this.#pageId) continue;
      const value = m.value!;
      const initial = this.#paginationOpts.numItems as number;
      if (
        value.splitCursor &&
        (value.pageStatus === "SplitRecommended" ||
          value.pageStatus === "SplitRequired" ||
          value.page.length > initial * 2)
      )
        this.#due = {
          splitCursor: value.splitCursor,
          continueCursor: value.continueCursor,
        };
    }
  }

  /** Splits the page on every peer if its last result called for it. */
  async splitIfDue(): Promise<void> {
    const due = this.#due;
    if (due === null) return;
    this.#due = null;
    const [newer, older] = [this.#nextId, this.#nextId + 1];
    this.#nextId += 2;
    const add = (queryId: number, paginationOpts: Record<string, unknown>) => ({
      type: "Add",
      queryId,
      udfPath: "messages:list",
      args: [{ paginationOpts }],
    });
    const newerOpts = { ...this.#paginationOpts, endCursor: due.splitCursor };
    await this.#modify(`"queryId":${older}`, [
      add(newer, newerOpts),
      add(older, {
        ...this.#paginationOpts,
        cursor: due.splitCursor,
        endCursor: due.continueCursor,
      }),
    ]);
    await this.#modify('"QueryRemoved"', [
      { type: "Remove", queryId: this.#pageId },
    ]);
    this.#pageId = newer;
    this.#paginationOpts = newerOpts;
    this.count++;
  }

  /** One query set change on every peer, until each has its Transition. */
  async #modify(seen: string, modifications: object[]): Promise<void> {
    const baseVersion = this.#version++;
    await Promise.all(
      this.#peers.map((peer) => {
        const answered = peer.expect(seen);
        peer.send({
          type: "ModifyQuerySet",
          baseVersion,
          newVersion: baseVersion + 1,
          modifications,
        });
        return answered;
      }),
    );
  }
}

async function identicalCase(
  backend: Child,
  subscribers: number,
  rounds: number,
): Promise<FanOutCase> {
  const paginationOpts = { numItems: 30, cursor: null, id: 1 };
  const page = { udfPath: "messages:list", args: { paginationOpts } };
  const peers = await openMany(subscribers, () =>
    syncPeer(backend.url, [page]),
  );
  const splits = new PageSplits(peers, { queryId: 0, paginationOpts }, 1);
  const sender = await syncPeer(backend.url, []);
  const committedAt = answers(sender);
  // A new guest every MESSAGE_BURST sends, so the chat's per-user rate limit
  // (convex/limits.ts) never refuses a round; mutations on one socket run in
  // order, so each guest's sessions:start lands before its first send.
  let sessionId = "";
  let sent = MESSAGE_BURST;
  let requestId = 0;
  const send = (body: string) => {
    if (sent >= MESSAGE_BURST) {
      sessionId = crypto.randomUUID();
      sent = 0;
      sender.send({
        type: "Mutation",
        requestId: requestId++,
        udfPath: "sessions:start",
        args: [{ sessionId }],
      });
    }
    sent++;
    sender.send({
      type: "Mutation",
      requestId: requestId++,
      udfPath: "messages:send",
      args: [{ sessionId, body }],
    });
  };
  const splitting = () => splits.splitIfDue();
  await closedLoop(
    peers,
    3,
    (_, marker) => send(marker),
    (_, text) => splits.inspect(text),
    undefined,
    splitting,
  );
  const frames: string[] = [];
  await backend.request("reset");
  const ours = await closedLoop(
    peers,
    rounds,
    (_, marker) => send(marker),
    (round, text) => {
      frames[round] = text;
      splits.inspect(text);
    },
    committedAt,
    splitting,
  );
  const oursStall = await backend.request<Stall>("stall");
  for (const peer of [...peers, sender]) peer.close();

  const { floor, floorStall } = await rawFloor(subscribers, rounds, frames);
  const durableDir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-fsync-"));
  const { floor: fsyncFloor } = await rawFloor(
    subscribers,
    rounds,
    frames,
    path.join(durableDir, "rounds"),
  ).finally(() => fs.rmSync(durableDir, { recursive: true, force: true }));
  const deliveries = subscribers * rounds;
  return {
    name: `identical subscriptions, ${subscribers} subscribers, closed loop`,
    subscribers,
    ours: {
      perPeer: summarize(ours.perPeer),
      last: summarize(ours.last),
      commitToLast: summarize(ours.sinceCommit),
      deliveriesPerSec: deliveries / ours.seconds,
    },
    floor: {
      perPeer: summarize(floor.perPeer),
      last: summarize(floor.last),
      deliveriesPerSec: deliveries / floor.seconds,
    },
    fsyncFloor: {
      perPeer: summarize(fsyncFloor.perPeer),
      last: summarize(fsyncFloor.last),
      deliveriesPerSec: deliveries / fsyncFloor.seconds,
    },
    stallMs: { ours: oursStall.maxMs, floor: floorStall.maxMs },
    onCpuMs: onCpu(oursStall, floorStall),
    cpuUsPerDelivery: cpuPerDelivery(oursStall, floorStall, deliveries),
    extra: {
      frameBytes: Buffer.byteLength(frames.at(-1) ?? ""),
      pageSplits: splits.count,
    },
  };
}

async function idleCase(
  backend: Child,
  rounds: number,
  channels: number,
  sockets: number,
  perSocket: number,
): Promise<FanOutCase> {
  const channelOf = (socket: number, j: number) =>
    (socket * perSocket + j) % channels;
  const peers = await openMany(sockets, (s) =>
    syncPeer(
      backend.url,
      Array.from({ length: perSocket }, (_, j) => ({
        udfPath: "items:range",
        args: { group: `ch${channelOf(s, j)}` },
      })),
    ),
  );
  const subscribersOf = (channel: number) =>
    peers.filter((_, s) =>
      Array.from({ length: perSocket }, (_, j) => channelOf(s, j)).includes(
        channel,
      ),
    );
  const sender = await syncPeer(backend.url, []);
  const committedAt = answers(sender);
  let requestId = 0;
  const insert = (channel: number, marker: string) =>
    sender.send({
      type: "Mutation",
      requestId: requestId++,
      udfPath: "items:insert",
      args: [{ group: `ch${channel}`, rank: requestId, value: marker }],
    });
  const last: number[] = [];
  const perPeer: number[] = [];
  const sinceCommit: number[] = [];
  let otherFrames = 0;
  let seconds = 0;
  const frames: string[] = [];
  const targets: number[] = [];
  await backend.request("reset");
  for (let round = 0; round < rounds; round++) {
    const channel = (round * 7919) % channels;
    targets.push(channel);
    const hit = subscribersOf(channel);
    const others = peers.filter((p) => !hit.includes(p));
    const before = others.reduce((sum, p) => sum + p.frames, 0);
    const result = await closedLoop(
      hit,
      1,
      (_, marker) => insert(channel, marker),
      (_, text) => (frames[round] = text),
      committedAt,
    );
    // Let any stray frame to another socket arrive before counting.
    await new Promise((resolve) => setTimeout(resolve, 5));
    otherFrames += others.reduce((sum, p) => sum + p.frames, 0) - before;
    last.push(...result.last);
    perPeer.push(...result.perPeer);
    sinceCommit.push(...result.sinceCommit);
    seconds += result.seconds;
  }
  const oursStall = await backend.request<Stall>("stall");
  const hitCount = subscribersOf(targets[0]).length;
  for (const peer of [...peers, sender]) peer.close();

  const { floor, floorStall } = await rawFloor(hitCount, rounds, frames);
  const deliveries = hitCount * rounds;
  return {
    name: `${sockets * perSocket} idle subscriptions over ${channels} channels, one insert (${hitCount} subscribers of that channel)`,
    subscribers: hitCount,
    ours: {
      perPeer: summarize(perPeer),
      last: summarize(last),
      commitToLast: summarize(sinceCommit),
      deliveriesPerSec: deliveries / seconds,
    },
    floor: {
      perPeer: summarize(floor.perPeer),
      last: summarize(floor.last),
      deliveriesPerSec: deliveries / floor.seconds,
    },
    stallMs: { ours: oursStall.maxMs, floor: floorStall.maxMs },
    onCpuMs: onCpu(oursStall, floorStall),
    cpuUsPerDelivery: cpuPerDelivery(oursStall, floorStall, deliveries),
    extra: { framesToOtherSockets: otherFrames },
  };
}

/**
 * Mutation answers on `sender`, by request id: resolves with the answer, or
 * rejects with the error text of a failed mutation.
 */
export function mutations(sender: Peer): (requestId: number) => Promise<void> {
  const waiting = new Map<number, (answer: MutationAnswer) => void>();
  sender.ws.on("message", (data: Buffer) => {
    const text = data.toString("utf8");
    if (!text.startsWith('{"type":"MutationResponse"')) return;
    const answer = JSON.parse(text) as MutationAnswer;
    waiting.get(answer.requestId)?.(answer);
    waiting.delete(answer.requestId);
  });
  return (requestId) =>
    new Promise((resolve, reject) => {
      waiting.set(requestId, (answer) => {
        if (answer.success) resolve();
        else
          reject(
            new Error(
              `mutation ${requestId}: ${JSON.stringify(answer.result)}`,
            ),
          );
      });
    });
}

type MutationAnswer = {
  requestId: number;
  success: boolean;
  result: unknown;
};

/**
 * The chat's real page, `pages` times: each socket has its own session and
 * subscribes to what `src/App.tsx` and `MessageList.tsx` do, `users.me` with
 * its `sessionId` (distinct per page) and the first page of `messages.list`
 * (the same for every page). One sender socket posts with `messages.send` in
 * a closed loop.
 *
 * The chat's limits would otherwise be what is measured: a user may send a
 * burst of `MESSAGE_BURST` (5) then 20 a minute, so the sender rotates over a
 * pool of sessions, each sending at most `MESSAGE_BURST` times; and new
 * guests have a deployment-wide burst of 300 (`GUEST_CREATION_BURST`), so only
 * the sender pool calls `sessions.start` and the pages' `users.me` is null,
 * as for a page whose first mutation has not run yet (same query, same read
 * set shape: one `sessions.by_tokenHash` lookup).
 */
async function chatCase(
  backend: Child,
  pages: number,
  rounds: number,
): Promise<FanOutCase> {
  const warmUp = 3;
  const pool = Array.from(
    { length: Math.ceil((warmUp + rounds) / MESSAGE_BURST) },
    () => crypto.randomUUID(),
  );
  const paginationOpts = { numItems: 30, cursor: null, id: 1 };
  const peers = await openMany(pages, () =>
    syncPeer(backend.url, [
      { udfPath: "users:me", args: { sessionId: crypto.randomUUID() } },
      { udfPath: "messages:list", args: { paginationOpts } },
    ]),
  );
  const splits = new PageSplits(peers, { queryId: 1, paginationOpts }, 2);
  const sender = await syncPeer(backend.url, []);
  const committedAt = answers(sender);
  const answered = mutations(sender);
  let requestId = 0;
  const mutate = (udfPath: string, args: object) => {
    const id = requestId++;
    const answer = answered(id);
    sender.send({ type: "Mutation", requestId: id, udfPath, args: [args] });
    return answer;
  };
  for (const sessionId of pool) await mutate("sessions:start", { sessionId });
  let sent = 0;
  // A failed send (a limit) is printed at once, before the round times out.
  const failures: Error[] = [];
  const send = (body: string) => {
    const sessionId = pool[sent++ % pool.length];
    mutate("messages:send", { sessionId, body }).catch((error: Error) => {
      console.error(error.message);
      failures.push(error);
    });
  };
  const splitting = () => splits.splitIfDue();
  await closedLoop(
    peers,
    warmUp,
    (_, marker) => send(marker),
    (_, text) => splits.inspect(text),
    undefined,
    splitting,
  );
  const frames: string[] = [];
  await backend.request("reset");
  const ours = await closedLoop(
    peers,
    rounds,
    (_, marker) => send(marker),
    (round, text) => {
      frames[round] = text;
      splits.inspect(text);
    },
    committedAt,
    splitting,
  );
  const oursStall = await backend.request<Stall>("stall");
  if (failures.length > 0) throw failures[0];
  for (const peer of [...peers, sender]) peer.close();

  const { floor, floorStall } = await rawFloor(pages, rounds, frames);
  const deliveries = pages * rounds;
  return {
    name:
      `chat's real functions, ${pages} open pages (distinct sessions: users.me + messages.list), closed loop; ` +
      `sender rotates over ${pool.length} sessions, at most ${MESSAGE_BURST} sends each (under the rate limit)`,
    subscribers: pages,
    ours: {
      perPeer: summarize(ours.perPeer),
      last: summarize(ours.last),
      commitToLast: summarize(ours.sinceCommit),
      deliveriesPerSec: deliveries / ours.seconds,
    },
    floor: {
      perPeer: summarize(floor.perPeer),
      last: summarize(floor.last),
      deliveriesPerSec: deliveries / floor.seconds,
    },
    stallMs: { ours: oursStall.maxMs, floor: floorStall.maxMs },
    onCpuMs: onCpu(oursStall, floorStall),
    cpuUsPerDelivery: cpuPerDelivery(oursStall, floorStall, deliveries),
    extra: {
      senderSessions: pool.length,
      // Queries updated in a page's frame: 1 when only `messages.list` changed.
      queriesInFrame: (frames.at(-1) ?? "").split('"QueryUpdated"').length - 1,
      frameBytes: Buffer.byteLength(frames.at(-1) ?? ""),
      pageSplits: splits.count,
      lastP50RatioToFloor:
        Math.round(
          (100 * summarize(ours.last).p50) / summarize(floor.last).p50,
        ) / 100,
    },
  };
}

function onCpu(ours: Stall, floor: Stall): FanOutCase["onCpuMs"] {
  const side = (stall: Stall) => ({
    ofLongestStall: stall.onCpuMs,
    longest: stall.longestOnCpuMs,
    gcMax: stall.gcMaxMs,
  });
  return { ours: side(ours), floor: side(floor) };
}

function cpuPerDelivery(
  ours: Stall,
  floor: Stall,
  deliveries: number,
): FanOutCase["cpuUsPerDelivery"] {
  return {
    ours: (1000 * ours.cpuMs) / deliveries,
    floor: (1000 * floor.cpuMs) / deliveries,
  };
}

function report(cases: FanOutCase[]): void {
  const f = (x: number) => x.toFixed(2);
  for (const c of cases) {
    console.log(`\n${c.name}`);
    console.log(
      formatSummary("  ours: send to visible, each subscriber", c.ours.perPeer),
    );
    console.log(
      formatSummary("  raw ws floor: send to visible, each", c.floor.perPeer),
    );
    console.log(
      formatSummary("  ours: send to visible, last subscriber", c.ours.last),
    );
    console.log(
      formatSummary("  raw ws floor: send to visible, last", c.floor.last),
    );
    console.log(
      formatSummary(
        "  ours: commit answered to last subscriber's frame",
        c.ours.commitToLast,
      ),
    );
    console.log(
      `  ratio to floor (each): p50 ${f(c.ours.perPeer.p50 / c.floor.perPeer.p50)}x, p99 ${f(c.ours.perPeer.p99 / c.floor.perPeer.p99)}x; ` +
        `deliveries/s ${c.ours.deliveriesPerSec.toFixed(0)} vs ${c.floor.deliveriesPerSec.toFixed(0)} (${((100 * c.ours.deliveriesPerSec) / c.floor.deliveriesPerSec).toFixed(0)}%); ` +
        `longest event-loop stall ${f(c.stallMs.ours)} ms (${f(c.onCpuMs.ours.ofLongestStall)} on a CPU) vs ${f(c.stallMs.floor)} ms (${f(c.onCpuMs.floor.ofLongestStall)}); ` +
        `longest stretch on a CPU ${f(c.onCpuMs.ours.longest)} ms vs ${f(c.onCpuMs.floor.longest)} ms; ` +
        `longest GC pause ${f(c.onCpuMs.ours.gcMax)} ms vs ${f(c.onCpuMs.floor.gcMax)} ms; ` +
        `CPU per delivery ${c.cpuUsPerDelivery.ours.toFixed(1)} µs vs ${c.cpuUsPerDelivery.floor.toFixed(1)} µs` +
        (c.extra === undefined
          ? ""
          : `; ${Object.entries(c.extra)
              .map(([k, v]) => `${k} ${v}`)
              .join(", ")}`),
    );
    if (c.fsyncFloor !== undefined) {
      const d = c.fsyncFloor;
      console.log(
        formatSummary("  raw ws floor + one fsync per round, each", d.perPeer),
      );
      console.log(
        `  ratio to floor + fsync (a reference, not the target): p50 ${f(c.ours.perPeer.p50 / d.perPeer.p50)}x, p99 ${f(c.ours.perPeer.p99 / d.perPeer.p99)}x; ` +
          `deliveries/s ${((100 * c.ours.deliveriesPerSec) / d.deliveriesPerSec).toFixed(0)}% of its ${d.deliveriesPerSec.toFixed(0)}`,
      );
    }
  }
}

export async function fanOutBenchmarks(options: {
  quick: boolean;
  /**
   * `"chat"`: only the chat's real functions with 100 and 1,000 pages;
   * `"identical"`: only the identical subscriptions (10, 100, 1,000).
   */
  only?: "chat" | "identical";
  json?: string;
}): Promise<FanOutCase[]> {
  const rounds = options.quick ? 20 : 100;
  const cases: FanOutCase[] = [];
  const run = async (
    functions: string,
    body: (backend: Child) => Promise<void>,
  ) => {
    const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-fanout-"));
    const backend = await startChild("backendProcess.ts", [functions, data]);
    try {
      await body(backend);
    } finally {
      await backend.stop();
      fs.rmSync(data, { recursive: true, force: true });
    }
  };
  console.log(
    `\nfan-out (bare sockets on both sides; rounds per case: ${rounds}; times in ms)`,
  );
  for (const pages of options.only === "identical" ? [] : [100, 1_000]) {
    await run(path.join(ROOT, "convex"), async (backend) => {
      cases.push(await chatCase(backend, pages, rounds));
    });
  }
  if (options.only === "chat") return finish(cases, options.json);
  for (const subscribers of [10, 100, 1_000]) {
    await run(path.join(ROOT, "convex"), async (backend) => {
      cases.push(await identicalCase(backend, subscribers, rounds));
    });
  }
  if (options.only === "identical") return finish(cases, options.json);
  await run(
    path.join(ROOT, "local-backend/test/fixture/convex"),
    async (backend) => {
      cases.push(
        await idleCase(
          backend,
          rounds,
          options.quick ? 100 : 1_000,
          options.quick ? 20 : 200,
          100,
        ),
      );
    },
  );
  return finish(cases, options.json);
}

function finish(cases: FanOutCase[], jsonPath?: string): FanOutCase[] {
  report(cases);
  const json = JSON.stringify({ fanOut: cases }, null, 2);
  if (jsonPath !== undefined) fs.writeFileSync(jsonPath, json);
  console.log(`\nJSON:\n${json}`);
  return cases;
}
