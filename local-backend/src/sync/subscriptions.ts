/**
 * Subscriptions across all sockets: one shared entry per distinct query, the
 * index that tells a commit which entries it invalidates, and the fan-out
 * queue that runs every socket's update in time slices (`updateQueue.ts`).
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
 * Snapshots. Queries run concurrently with commits (functions/functionRunner.ts):
 * a result is filed, with its read set, at the moment the runner validated it
 * at the latest commit, so from then on every commit that could change it
 * clears it. A socket builds its Transition only at a moment when every query
 * it sends holds a result, which makes them all valid at that moment's
 * timestamp: a Transition never mixes two snapshots. A socket whose results
 * commits keep clearing faster than it runs them runs them all at one pinned
 * snapshot instead (`UpdateSlot.pinSnapshot`) and sends them at its
 * timestamp; those still valid now fill their entries (`adopt`).
 *
 * Fan-out. Every socket's update runs from one queue, in up to UPDATE_LANES
 * lanes at once, in time slices of SLICE_MS that all lanes share
 * (`timeSlices.ts`): when a slice runs out, every lane gives the event loop
 * back before the next. So a room of 1,000
 * sockets never stalls pings, HTTP calls or other sockets for long, a socket
 * with many queries to run cannot hold everyone else (an update that reaches
 * the deadline with queries left goes to the back of the queue and continues
 * later; convex-backend runs one connection's queries 20 at a time,
 * `crates/sync/src/worker.rs` `UPDATE_QUERY_CONCURRENCY`), and a socket
 * waiting on one slow query holds one lane, not the others. A socket's own
 * requests (its query set, its mutations) go to the front. An update whose
 * results are all held finishes without a microtask (`Subscriber.update`
 * returns a boolean), so 1,000 identical sockets cost 1,000 frame lookups
 * (`transitionFrames.ts`), not 1,000 promise chains.
 *
 * Durability. Frames wait in each socket's outbox until their commit is on
 * disk (syncSession.ts); `whenDurable` makes that one wait per commit, not one
 * per socket, and releases the sockets in the same slices, so the fsync that
 * frees a room's Transitions does not write them all in one stretch.
 *
 * Usage (sync sessions):
 *   const entry = hub.subscribe(session, queryId, { path, args, journal, identity });
 *   hub.schedule(session, true);             // later: session.update(slot) runs
 *   await hub.resultOf(entry, slot.runQuery);  // then read entry.result, synchronously
 *   const frame = hub.frames.transition(parts); // the bytes, shared with identical sockets
 *   hub.whenDurable(ts, flush, fail);          // flush() runs in a slice once ts is on disk
 *   hub.unsubscribe(session, queryId, entry);
 */
import type { JSONValue } from "convex/values";
import type {
  FunctionRunner,
  PinnedSnapshot,
  QueryOutcome,
  QueryRequest,
} from "../functions/functionRunner.ts";
import { LARGE_RESULT_CHARS } from "../functions/functionRunner.ts";
import type { Pace } from "../functions/syscalls.ts";
import {
  type Identity,
  identityCacheKey,
} from "../functions/authentication.ts";
import type { DocumentChange } from "../query/readSet.ts";
import { ReadSetIndex } from "../query/readSetIndex.ts";
import type { Database } from "../storage/database.ts";
import { type QueryModification, queryModification } from "./outcomes.ts";
import type { QueryId } from "./protocol.ts";
import { TimeSlices } from "./timeSlices.ts";
import { TransitionFrames } from "./transitionFrames.ts";
import { rememberedJson } from "../values/serialized.ts";
import { UpdateQueue } from "./updateQueue.ts";

/** How long one fan-out slice may run before yielding the event loop. */
export const SLICE_MS = 8;
/** The share of a slice that sockets' frames get while updates wait (`receiving`). */
const FRAMES_SHARE = 0.5;

/**
 * What waits for a slice: an outbox whose commit is durable, or a socket
 * whose frames wait (`whenReceiving`). `fail` gets what `resume` throws.
 */
type Waiter = { resume: () => void; fail: (error: unknown) => void };

/**
 * Waiters resumed in arrival order while a slice allows; those a stop
 * leaves keep their order, and the resumed ones go at once (under a lasting
 * backlog the queue may not empty for a while, and they hold closed
 * sockets' sessions).
 */
class ResumeQueue {
  #waiters: Waiter[] = [];
  /** The first of `#waiters` not yet resumed. */
  #next = 0;

  push(...waiters: Waiter[]): void {
    this.#waiters.push(...waiters);
  }

  clear(): void {
    this.#waiters = [];
    this.#next = 0;
  }

  /** Resumes waiters while `mayRun()`: true once none is left. */
  resumeWhile(mayRun: () => boolean): boolean {
    while (this.#next < this.#waiters.length) {
      if (!mayRun()) {
        if (this.#next > 0) {
          this.#waiters = this.#waiters.slice(this.#next);
          this.#next = 0;
        }
        return false;
      }
      const waiter = this.#waiters[this.#next++];
      try {
        waiter.resume();
      } catch (error) {
        waiter.fail(error);
      }
    }
    this.clear();
    return true;
  }
}
/**
 * Queries of a closed socket released in one slice at most
 * (`unsubscribeAll`): 10,000 at once held the event loop 13 ms.
 */
export const UNSUBSCRIBE_PER_SLICE = 2_000;
/** Sockets' updates running at once: one stuck on a slow query holds only its lane. */
const UPDATE_LANES = 4;
/**
 * An update whose queries ran this long is heavy: the socket's next waits
 * behind the light ones (`UpdateQueue`), and at most HEAVY_LANES of them run
 * at once, so the other lanes stay free for cheap clients. Ten sockets each
 * re-running a 1 MiB result at every commit held a healthy client's update
 * behind all of theirs (p99 77-126 ms against 6 ms alone, bench/fairness.ts).
 */
const HEAVY_UPDATE_MS = 5;
const HEAVY_LANES = 2;

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
  /** The run in flight, which every socket needing the result waits for (`resultOf`). */
  running: Promise<boolean> | null = null;
  /** Its last result was large: it runs off the main thread when it can (`QueryRequest.offMainThread`). */
  large = false;

  constructor(key: string, query: SharedQuery) {
    this.key = key;
    this.query = query;
  }

  /** Notes a run's outcome, valid or not (a conflicted run's, a snapshot pass's). */
  ran(outcome: QueryOutcome): void {
    this.large =
      outcome.status === "success" &&
      (rememberedJson(outcome.value)?.length ?? 0) >= LARGE_RESULT_CHARS;
  }
}

/** What a slice gives each update: the query runner and its deadline. */
export type UpdateSlot = {
  /** `FunctionRunner.runQuery`: `onValid` runs when the outcome is valid at the latest commit. */
  runQuery: (
    request: QueryRequest,
    onValid: (outcome: QueryOutcome) => void,
  ) => Promise<QueryOutcome>;
  /** `FunctionRunner.exclusive`: runs a task with commits held off. */
  exclusive: <T>(task: () => Promise<T>) => Promise<T>;
  /** `FunctionRunner.pinSnapshot`: a snapshot to run queries at while commits go on. */
  pinSnapshot: () => PinnedSnapshot | null;
  /** `performance.now()` past which an update should stop running queries. */
  deadline: number;
  /** For a run's request (`QueryRequest.pace`): a long run goes on only in the hub's slices. */
  pace: Pace;
  /** Ends the slice for every lane: the event loop turns before more updates run. */
  endSlice: () => void;
};

export interface Subscriber {
  /** These queries' results were cleared; re-run them in the next update. */
  invalidate(queryIds: ReadonlySet<QueryId>): void;
  /** The functions changed (a reload): every query must re-run. */
  invalidateAll(): void;
  /**
   * Brings the client up to date within a slice: false when it stopped at the
   * deadline with work left (it is queued again), true otherwise; a boolean
   * when it finished without waiting (every result held), else a promise.
   */
  update(slot: UpdateSlot): boolean | Promise<boolean>;
  /**
   * How long the queries of its update under way have run so far, or else
   * of its last one (ms): what the queue's heavy tier is decided by.
   */
  readonly updateMs: number;
}

/** Whether its next update waits behind the light ones (HEAVY_UPDATE_MS). */
function isHeavy(subscriber: Subscriber): boolean {
  return subscriber.updateMs >= HEAVY_UPDATE_MS;
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
  /** Transition bytes, shared between sockets that send the same ones. */
  readonly frames = new TransitionFrames();
  readonly #slices = new TimeSlices(SLICE_MS);
  readonly #entries = new Map<string, QueryEntry>();
  readonly #index = new ReadSetIndex<QueryEntry>();
  readonly #subscribers = new Set<Subscriber>();
  /** Updates waiting for a slice: a socket's own requests first, then commits'. */
  readonly #queue = new UpdateQueue<Subscriber>();
  /**
   * Subscribers whose update a lane is running, so no other lane takes them,
   * and whether they were scheduled again meanwhile.
   * - joins when a lane takes it (false); true / "urgent" when scheduled during its run
   * - leaves when its update ends; then it is queued again if it was scheduled
   */
  readonly #running = new Map<Subscriber, boolean | "urgent">();
  /** Heavy updates under way (HEAVY_LANES). */
  #heavyRunning = 0;
  /**
   * How the hub's runs go on after pausing between turns (a long window
   * split, a page read in parts): in a later turn, inside a slice
   * (`TimeSlices.later`). With a plain `setImmediate` every run that paused
   * in one turn went on back to back in the next, with no poll between
   * (lanes each finishing a 1 MiB result: 40-60 ms).
   */
  readonly #pace: Pace = (resume) => this.#slices.later(resume);
  #lanes = 0;
  #drainSoon = false;
  /**
   * Outboxes waiting for a commit to be durable, by that commit's ts.
   * - a ts joins with its first waiter, and one `db.durable(ts)` for all
   * - leaves when that resolves (its waiters move to `#released`) or fails
   */
  readonly #awaitingDurable = new Map<bigint, Waiter[]>();
  /** Outboxes whose commit is durable, resumed in arrival order, in slices. */
  readonly #released = new ResumeQueue();
  #releasing = false;
  /**
   * Sockets whose frames wait for a slice (`whenReceiving`), in arrival
   * order: served at the start of every slice, with the released outboxes,
   * before any update. Left to `pace` they lost every slice to the lanes
   * (the lanes waiting on a turn's end resume before an immediate does),
   * and a client's mutation waited behind a greedy socket's whole pass:
   * 1.2 s p50 next to 1,000 subscriptions re-run at every commit. While
   * updates wait, frames get the first FRAMES_SHARE of a slice (and at least
   * one frame), the updates the rest: a socket that kept a backlog of
   * frames otherwise held every other client's updates until it was closed
   * for the backlog (1.2 s with 20 Event frames of 180 KB a read).
   */
  readonly #receivers = new ResumeQueue();
  /** The deadline of the slice a frame was last handled in (`receiving`). */
  #framesSlice = 0;
  readonly #sliceOpen = (): boolean => this.#slices.open();
  readonly #framesMayRunNow = (): boolean => this.#framesMayRun();
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

  /** Outboxes waiting for their commit's fsync (`whenDurable`). */
  get waitingForDurable(): number {
    let count = 0;
    for (const waiters of this.#awaitingDurable.values())
      count += waiters.length;
    return count;
  }

  add(subscriber: Subscriber): () => void {
    this.#subscribers.add(subscriber);
    return () => {
      this.#subscribers.delete(subscriber);
      this.#queue.remove(subscriber);
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

  /**
   * `unsubscribe`s every query of a subscriber that is gone (a closed
   * socket, already released from `add`, so nothing is scheduled for it):
   * UNSUBSCRIBE_PER_SLICE at once, the rest inside the hub's slices, at most
   * as many in each. Until then its entries still list it, which costs
   * nothing: an invalidation only marks it dirty.
   */
  unsubscribeAll(
    subscriber: Subscriber,
    queries: readonly (readonly [QueryId, QueryEntry])[],
  ): void {
    let next = 0;
    const release = (atMost: number) => {
      const end = Math.min(queries.length, next + atMost);
      for (; next < end; next++)
        this.unsubscribe(subscriber, queries[next][0], queries[next][1]);
    };
    release(UNSUBSCRIBE_PER_SLICE);
    if (next === queries.length) return;
    // The first release counts as this turn's slice: the next one waits for a poll.
    this.#slices.open();
    void (async () => {
      while (next < queries.length) {
        await this.#slices.next();
        if (this.#slices.open()) release(UNSUBSCRIBE_PER_SLICE);
      }
    })();
  }

  /** How work of the hub's goes on in a later turn, inside its slices (`TimeSlices.later`). */
  get pace(): Pace {
    return this.#pace;
  }

  /**
   * Whether a socket's frame may be handled now: inside the hub's slice,
   * starting one if none runs, and while updates wait only in the slice's
   * first FRAMES_SHARE (one frame a slice at least). Frames share the
   * slices with the hub's updates, so frames of many sockets that arrive
   * in one poll are handled over several turns (`SyncSession.receive`), not
   * in one stretch, and a socket that keeps a backlog holds no one's updates.
   */
  receiving(): boolean {
    if (!this.#framesMayRun()) return false;
    this.#framesSlice = this.#slices.deadline;
    return true;
  }

  /**
   * Inside a slice, and, while updates wait, inside its first FRAMES_SHARE
   * or before its first frame.
   */
  #framesMayRun(): boolean {
    if (!this.#slices.open()) return false;
    const slice = this.#slices.deadline;
    return (
      this.#framesSlice !== slice ||
      !this.#updatesWait() ||
      performance.now() < slice - SLICE_MS * (1 - FRAMES_SHARE)
    );
  }

  /**
   * Calls `resume` (a socket's handler of the frames it holds) in a later
   * slice, before that slice's updates; in the order sockets asked. `fail`
   * gets what `resume` throws.
   */
  whenReceiving(resume: () => void, fail: (error: unknown) => void): void {
    this.#receivers.push({ resume, fail });
    void this.#release();
  }

  /** Updates are queued or under way (frames then get only their share of a slice). */
  #updatesWait(): boolean {
    return this.#queue.size > 0 || this.#lanes > 0;
  }

  /**
   * Ends the slice this turn is in, starting one to end if none runs: the
   * hub's work goes on after the event loop has polled I/O. For a turn that
   * already did a long stretch outside the slices (parsing a large frame).
   */
  endTurn(): void {
    this.#slices.open();
    this.#slices.end();
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
   * Runs the entry's query unless it holds a valid result. A commit may
   * clear the result again before the caller looks: callers check
   * `entry.result` at the moment they use it. Resolves to false when the
   * run could not be validated at all (commits kept overlapping it: the
   * caller should go on at a snapshot), true otherwise.
   */
  resultOf(
    entry: QueryEntry,
    runQuery: UpdateSlot["runQuery"],
  ): Promise<boolean> {
    if (entry.result !== null) return Promise.resolve(true);
    // A run in flight is validated against every commit made during it, so
    // its result is as good as a new run's.
    if (entry.running !== null) return entry.running;
    const { path, args, journal, identity } = entry.query;
    let filed = false;
    const request = {
      path,
      args,
      journal,
      identity,
      offMainThread: entry.large,
    };
    const running = runQuery(request, (outcome) => {
      filed = true;
      this.#file(entry, { outcome, ...queryModification(outcome) });
    }).then(
      (outcome) => {
        entry.running = null;
        entry.ran(outcome);
        return filed;
      },
      (error: unknown) => {
        entry.running = null;
        throw error;
      },
    );
    entry.running = running;
    return running;
  }

  /**
   * A result a socket got at a snapshot that no commit since has written
   * into, so it is valid now: the entry keeps it (unless it holds one, or a
   * run of its own is in flight) and commits clear it from now on.
   * Call synchronously after checking that it is valid now.
   */
  adopt(entry: QueryEntry, result: SharedResult): void {
    if (entry.result !== null || entry.running !== null) return;
    this.#file(entry, result);
  }

  #file(entry: QueryEntry, result: SharedResult): void {
    // Filed at validation: the next commit must already see what this run
    // read, or its invalidation would be missed. An entry everyone left
    // while it ran is not filed (it would never be taken out).
    if (this.#entries.get(entry.key) !== entry) return;
    this.#index.set(entry, result.outcome.readSet);
    entry.result = result;
  }

  /** Queues `subscriber`'s update; `urgent` for its own requests, which go first. */
  schedule(subscriber: Subscriber, urgent: boolean): void {
    if (!this.#subscribers.has(subscriber)) return;
    const running = this.#running.get(subscriber);
    if (running === undefined)
      this.#queue.add(subscriber, urgent, isHeavy(subscriber));
    else if (urgent) this.#running.set(subscriber, "urgent");
    else if (running === false) this.#running.set(subscriber, true);
    // Commit invalidations wait one macrotask, so the socket whose mutation
    // made the commit answers it and queues its own update first: its
    // `await mutation()` then waits for one slice, not for the whole room.
    // An urgent update starts the lanes at once, unless invalidations wait
    // already: lanes started now would take the room's updates too, in the
    // turn that ran the mutation (one stall of both); it goes first in the
    // queue either way.
    if (urgent && !this.#drainSoon) {
      this.#startLanes();
      return;
    }
    if (this.#drainSoon) return;
    this.#drainSoon = true;
    setImmediate(() => {
      this.#drainSoon = false;
      this.#startLanes();
    });
  }

  /**
   * Calls `resume` in a slice once every commit up to `ts` is durable (after
   * the waiters before it), or `fail` if the database cannot make it durable.
   */
  whenDurable(
    ts: bigint,
    resume: () => void,
    fail: (error: unknown) => void,
  ): void {
    let waiters = this.#awaitingDurable.get(ts);
    if (waiters === undefined) {
      const forTs: Waiter[] = [];
      waiters = forTs;
      this.#awaitingDurable.set(ts, forTs);
      this.db.durable(ts).then(
        () => {
          this.#awaitingDurable.delete(ts);
          this.#released.push(...forTs);
          void this.#release();
        },
        (error: unknown) => {
          this.#awaitingDurable.delete(ts);
          for (const waiter of forTs) waiter.fail(error);
        },
      );
    }
    waiters.push({ resume, fail });
  }

  /** After a reload: forget every result and re-run everything. */
  invalidateAll(): void {
    for (const entry of this.#entries.values()) entry.result = null;
    this.#index.clear();
    for (const subscriber of this.#subscribers) subscriber.invalidateAll();
  }

  close(): void {
    this.#unlisten();
    this.#awaitingDurable.clear();
    this.#released.clear();
    this.#receivers.clear();
    this.#subscribers.clear();
    this.#queue.clear();
    this.#entries.clear();
    this.#index.clear();
  }

  #invalidate(changes: readonly DocumentChange[]): void {
    const affected = this.#index.affected(changes);
    this.#index.deleteAll(affected);
    for (const entry of affected) {
      entry.result = null;
      for (const [subscriber, ids] of entry.subscribers)
        subscriber.invalidate(ids);
    }
  }

  #startLanes(): void {
    if (this.#lanes < UPDATE_LANES && this.#queue.size > 0) void this.#lane();
  }

  async #lane(): Promise<void> {
    this.#lanes++;
    const runQuery: UpdateSlot["runQuery"] = (request, onValid) =>
      this.runner.runQuery({ ...request, pace: this.#pace }, "public", onValid);
    const exclusive: UpdateSlot["exclusive"] = (task) =>
      this.runner.exclusive(task);
    const pinSnapshot = () => this.runner.pinSnapshot();
    const endSlice = () => this.#slices.end();
    const pace = this.#pace;
    try {
      for (;;) {
        if (!this.#slices.open() || !this.#resumeReleased(true)) {
          await this.#slices.next();
          continue;
        }
        // The fsync that outboxes wait for has returned: its answer is taken
        // at the next poll, so the slice ends here and the lane goes on after
        // that poll (an immediate set now runs after it; the slice's own end
        // may come before it), and the frames are written first, rather than
        // after a whole slice of updates (the sender's answer and the first
        // sockets' frames of a large room waited up to a slice). Only until
        // the answer is taken: the next poll takes it.
        if (this.#awaitingDurable.size > 0 && this.db.syncLanded) {
          this.#slices.end();
          await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        const next = this.#queue.take(this.#heavyRunning < HEAVY_LANES);
        if (next === undefined) return;
        const heavy = isHeavy(next);
        if (heavy) this.#heavyRunning++;
        this.#running.set(next, false);
        let done = true;
        try {
          const update = next.update({
            runQuery,
            exclusive,
            pinSnapshot,
            deadline: this.#slices.deadline,
            pace,
            endSlice,
          });
          // More work than lanes: another lane takes it while this one waits.
          // Started only now, after this update's synchronous part, so that
          // it finds the slice as that left it: lanes started first would
          // each run a query before any of them looked at the deadline (four
          // 1 MiB results back to back held the event loop 100 ms).
          this.#startLanes();
          done = typeof update === "boolean" ? update : await update;
        } finally {
          if (heavy) this.#heavyRunning--;
          const again = this.#running.get(next);
          this.#running.delete(next);
          if (this.#subscribers.has(next)) {
            if (again === "urgent") this.#queue.add(next, true);
            else if (again === true || !done)
              this.#queue.add(next, false, isHeavy(next));
          }
        }
      }
    } finally {
      this.#lanes--;
    }
  }

  /** Resumes released outboxes and waiting frames (`#resumeReleased`), a slice at a time. */
  async #release(): Promise<void> {
    if (this.#releasing) return;
    this.#releasing = true;
    try {
      while (!this.#resumeReleased()) await this.#slices.next();
    } finally {
      this.#releasing = false;
    }
  }

  /**
   * Resumes released outboxes, then sockets' waiting frames, while the slice
   * lasts: true once none is left, or, for a lane (`forUpdate`), once the
   * frames left have had their share of the slice (`receiving`). Lanes call
   * it before each update too, so frames that only wait to be written go
   * out first, rather than behind the rest of a room's updates (a lane that
   * holds the slice runs its updates back to back), and what clients sent
   * is read before more updates run.
   */
  #resumeReleased(forUpdate = false): boolean {
    if (!this.#released.resumeWhile(this.#sliceOpen)) return false;
    // A socket whose frames outlast the slice asks again, at the end.
    if (!this.#receivers.resumeWhile(this.#framesMayRunNow))
      return forUpdate && this.#slices.open();
    return true;
  }
}
