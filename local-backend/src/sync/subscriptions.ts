/**
 * Subscriptions across all sockets: which sync sessions a commit or a reload
 * invalidates, and a per-snapshot cache of query results shared by sessions.
 *
 * Invalidation follows read sets (`query/readSet.ts`): a query re-runs only
 * when a commit wrote a document inside an index interval it scanned, a
 * document it fetched by ID, or a table it counted. Many clients subscribed to the same query with the same
 * arguments and journal re-run it once per commit: the cache is keyed by the
 * snapshot timestamp, so it never serves a result from another snapshot.
 */
import type { DocumentChange } from "../query/readSet.ts";
import type { Database } from "../storage/database.ts";
import type {
  FunctionRunner,
  QueryOutcome,
  QueryRequest,
} from "../functions/functionRunner.ts";
import { ANONYMOUS, identityCacheKey } from "../functions/authentication.ts";

export interface Subscriber {
  /** A commit's writes; the subscriber re-runs the queries whose reads they overlap. */
  invalidate(changes: readonly DocumentChange[]): void;
  /** The functions changed (a reload): every query must re-run. */
  invalidateAll(): void;
}

export class SubscriptionHub {
  readonly runner: FunctionRunner;
  readonly db: Database;
  readonly #subscribers = new Set<Subscriber>();
  #cacheTs = -1n;
  #cache = new Map<string, QueryOutcome>();
  readonly #unlisten: () => void;

  constructor(db: Database, runner: FunctionRunner) {
    this.db = db;
    this.runner = runner;
    this.#unlisten = db.onCommit(({ changes }) => {
      for (const subscriber of this.#subscribers)
        subscriber.invalidate(changes);
    });
  }

  add(subscriber: Subscriber): () => void {
    this.#subscribers.add(subscriber);
    return () => this.#subscribers.delete(subscriber);
  }

  /** After a reload: forget cached results and re-run everything. */
  invalidateAll(): void {
    this.#cache.clear();
    for (const subscriber of this.#subscribers) subscriber.invalidateAll();
  }

  /**
   * Runs a query at the current snapshot, reusing the result when another
   * session already ran the same query at the same snapshot. Must be called
   * inside `runner.exclusive`, which keeps the snapshot fixed.
   */
  async runCached(
    runQuery: (request: QueryRequest) => Promise<QueryOutcome>,
    request: QueryRequest,
  ): Promise<QueryOutcome> {
    if (this.db.lastTs !== this.#cacheTs) {
      this.#cache.clear();
      this.#cacheTs = this.db.lastTs;
    }
    // The caller's identity is part of the key, or one user would get
    // another's results (convex-backend `Identity::cache_key`).
    const key = JSON.stringify([
      request.path,
      request.args,
      request.journal ?? null,
      identityCacheKey(request.identity ?? ANONYMOUS),
    ]);
    const cached = this.#cache.get(key);
    if (cached !== undefined) return cached;
    const outcome = await runQuery(request);
    this.#cache.set(key, outcome);
    return outcome;
  }

  close(): void {
    this.#unlisten();
    this.#subscribers.clear();
    this.#cache.clear();
  }
}
