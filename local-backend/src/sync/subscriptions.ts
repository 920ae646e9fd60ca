/**
 * Subscriptions across all sockets: one shared entry per distinct query, the
 * index that tells a commit which entries it invalidates, and the fan-out
 * queue that runs every socket's update in time slices.
 *
 * Sharing. Subscriptions with the same (path, args, journal, identity) share
 * one `QueryEntry`: one run per invalidation, one serialized modification and
 * one dedup hash, whatever the number of sockets; a socket only adds its query
 * id and its Transition's framing. An entry's result stays valid, across
 * snapshots, until a commit writes into what it read (the read set, as in
 * Convex's query cache, `realtime.mdx` "Automatic caching"); then it is
 * cleared, so no later snapshot is ever served an older result.
 *
 * Invalidation. Read sets are filed in a `ReadSetIndex` (table, index, key
 * interval, document ID), so a commit costs O(log S + affected entries), as
 * convex-backend's `SubscriptionManager` (`crates/database/src/subscription.rs`),
 * however many idle subscriptions there are.
 *
 * Fan-out. Every socket's update runs from one queue, a slice at a time: a
 * slice is one executor slot (one snapshot) that runs updates until SLICE_MS
 * have passed, then gives the event loop and the executor back before the
 * next. So a room of 1,000 sockets never stalls pings, HTTP calls or other
 * sockets for long, and a socket with many queries to run cannot hold everyone
 * else: an update that reaches the deadline with queries left goes to the back
 * of the queue and continues later (convex-backend runs one connection's
 * queries 20 at a time, `crates/sync/src/worker.rs` `UPDATE_QUERY_CONCURRENCY`).
 * A socket's own requests (its query set, its mutations) go to the front.
 *
 * Usage (sync sessions):
 *   const entry = hub.subscribe(session, queryId, { path, args, journal, identity });
 *   hub.schedule(session, true);             // later: session.update(slot) runs
 *   const result = await hub.resultOf(entry, slot.runQuery);
 *   hub.unsubscribe(session, queryId, entry);
 */
import { performance } from "node:perf_hooks";
import type { JSONValue } from "convex/values";
import type {
  FunctionRunner,
  QueryOutcome,
  QueryRequest,
} from "../functions/functionRunner.ts";
import {
  type Identity,
  identityCacheKey,
} from "../functions/authentication.ts";
import type { DocumentChange } from "../query/readSet.ts";
import { ReadSetIndex } from "../query/readSetIndex.ts";
import type { Database } from "../storage/database.ts";
import { type QueryModification, queryModification } from "./outcomes.ts";
import type { QueryId } from "./protocol.ts";

/** How long one fan-out slice may run before yielding the event loop. */
export const SLICE_MS = 8;

export type SharedQuery = {
  path: string;
  args: JSONValue;
  journal: string | null;
  /** Who the query runs as; its `identityCacheKey` is the sharing-key slot,
   *  so one user is never served another's results. */
  identity: Identity;
};

/** A run's outcome and its modification, serialized once for every subscriber (outcomes.ts). */
export type SharedResult = QueryModification & { outcome: QueryOutcome };

export class QueryEntry {
  readonly key: string;
  readonly query: SharedQuery;
  /** Who holds this query, and under which query ids. */
  readonly subscribers = new Map<Subscriber, Set<QueryId>>();
  /**
   * The result, valid at the current snapshot.
   * - null: never run, or a commit wrote into its read set since
   * - set by `resultOf`, cleared by a commit or a reload
   */
  result: SharedResult | null = null;

  constructor(key: string, query: SharedQuery) {
    this.key = key;
    this.query = query;
  }
}

/** What a slice gives each update: the slot's query runner and its deadline. */
export type UpdateSlot = {
  runQuery: (request: QueryRequest) => Promise<QueryOutcome>;
  /** `performance.now()` past which an update should stop running queries. */
  deadline: number;
};

export interface Subscriber {
  /** These queries' results were cleared; re-run them in the next update. */
  invalidate(queryIds: ReadonlySet<QueryId>): void;
  /** The functions changed (a reload): every query must re-run. */
  invalidateAll(): void;
  /**
   * Brings the client up to date inside a slice's slot. Resolves false when it
   * stopped at the deadline with work left (it is queued again), true otherwise.
   */
  update(slot: UpdateSlot): Promise<boolean>;
}

export function sharingKey(query: SharedQuery): string {
  return JSON.stringify([
    query.path,
    query.args,
    query.journal,
    identityCacheKey(query.identity),
  ]);
}

export class SubscriptionHub {
  readonly runner: FunctionRunner;
  readonly db: Database;
  readonly #entries = new Map<string, QueryEntry>();
  readonly #index = new ReadSetIndex<QueryEntry>();
  readonly #subscribers = new Set<Subscriber>();
  /** Updates waiting for a slice: a socket's own requests first, then commits'. */
  readonly #urgent = new Set<Subscriber>();
  readonly #queued = new Set<Subscriber>();
  #draining = false;
  #drainSoon = false;
  readonly #unlisten: () => void;

  constructor(db: Database, runner: FunctionRunner) {
    this.db = db;
    this.runner = runner;
    this.#unlisten = db.onCommit(({ changes }) => this.#invalidate(changes));
  }

  /** Distinct queries with at least one subscriber. */
  get entryCount(): number {
    return this.#entries.size;
  }

  /** Subscriptions over all sockets. */
  get subscriptionCount(): number {
    let count = 0;
    for (const entry of this.#entries.values())
      for (const ids of entry.subscribers.values()) count += ids.size;
    return count;
  }

  add(subscriber: Subscriber): () => void {
    this.#subscribers.add(subscriber);
    return () => {
      this.#subscribers.delete(subscriber);
      this.#urgent.delete(subscriber);
      this.#queued.delete(subscriber);
    };
  }

  subscribe(
    subscriber: Subscriber,
    queryId: QueryId,
    query: SharedQuery,
  ): QueryEntry {
    const key = sharingKey(query);
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      entry = new QueryEntry(key, query);
      this.#entries.set(key, entry);
    }
    let ids = entry.subscribers.get(subscriber);
    if (ids === undefined) {
      ids = new Set();
      entry.subscribers.set(subscriber, ids);
    }
    ids.add(queryId);
    return entry;
  }

  unsubscribe(
    subscriber: Subscriber,
    queryId: QueryId,
    entry: QueryEntry,
  ): void {
    const ids = entry.subscribers.get(subscriber);
    if (ids === undefined) return;
    ids.delete(queryId);
    if (ids.size > 0) return;
    entry.subscribers.delete(subscriber);
    if (entry.subscribers.size > 0) return;
    this.#entries.delete(entry.key);
    this.#index.delete(entry);
  }

  /**
   * The entry's result at the current snapshot, running the query only when
   * no valid result is held. Must be called inside the slice's slot, which
   * keeps the snapshot fixed while the read set is filed.
   */
  async resultOf(
    entry: QueryEntry,
    runQuery: UpdateSlot["runQuery"],
  ): Promise<SharedResult> {
    if (entry.result !== null) return entry.result;
    const { path, args, journal, identity } = entry.query;
    const outcome = await runQuery({ path, args, journal, identity });
    const result = { outcome, ...queryModification(outcome) };
    // Filed inside the slot: the next commit must already see what this run
    // read, or its invalidation would be missed. An entry everyone left while
    // it ran is not filed (it would never be taken out).
    if (this.#entries.get(entry.key) === entry) {
      this.#index.set(entry, outcome.readSet);
      entry.result = result;
    }
    return result;
  }

  /** Queues `subscriber`'s update; `urgent` for its own requests, which go first. */
  schedule(subscriber: Subscriber, urgent: boolean): void {
    if (!this.#subscribers.has(subscriber)) return;
    if (urgent) {
      this.#queued.delete(subscriber);
      this.#urgent.add(subscriber);
    } else if (!this.#urgent.has(subscriber)) {
      this.#queued.add(subscriber);
    }
    if (this.#draining) return;
    if (urgent) {
      void this.#drain();
      return;
    }
    // Commit invalidations wait one macrotask, so the socket whose mutation
    // made the commit answers it and queues its own update first: its
    // `await mutation()` then waits for one slice, not for the whole room.
    if (this.#drainSoon) return;
    this.#drainSoon = true;
    setImmediate(() => {
      this.#drainSoon = false;
      if (!this.#draining) void this.#drain();
    });
  }

  /** After a reload: forget every result and re-run everything. */
  invalidateAll(): void {
    for (const entry of this.#entries.values()) entry.result = null;
    this.#index.clear();
    for (const subscriber of this.#subscribers) subscriber.invalidateAll();
  }

  close(): void {
    this.#unlisten();
    this.#subscribers.clear();
    this.#urgent.clear();
    this.#queued.clear();
    this.#entries.clear();
    this.#index.clear();
  }

  #invalidate(changes: readonly DocumentChange[]): void {
    for (const entry of this.#index.affected(changes)) {
      entry.result = null;
      this.#index.delete(entry);
      for (const [subscriber, ids] of entry.subscribers)
        subscriber.invalidate(ids);
    }
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#urgent.size + this.#queued.size > 0) {
        await this.runner.exclusive(async (runQuery) => {
          const slot: UpdateSlot = {
            runQuery,
            deadline: performance.now() + SLICE_MS,
          };
          for (;;) {
            const next = first(this.#urgent) ?? first(this.#queued);
            if (next === undefined) return;
            this.#urgent.delete(next);
            this.#queued.delete(next);
            const done = await next.update(slot);
            if (!done && this.#subscribers.has(next)) this.#queued.add(next);
            if (performance.now() >= slot.deadline) return;
          }
        });
        if (this.#urgent.size + this.#queued.size > 0)
          await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      this.#draining = false;
    }
  }
}

function first<T>(set: Set<T>): T | undefined {
  for (const item of set) return item;
  return undefined;
}
