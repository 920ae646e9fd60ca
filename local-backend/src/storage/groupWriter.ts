/**
 * Group commit off the event loop (issue 7): the SQLite writes, the COMMIT
 * and the fsync of a group of commits run on a thread of their own
 * (groupWriterWorker.mjs, with a connection of its own), while the main
 * thread reads what those groups wrote from memory until the thread has
 * COMMITted them.
 *
 * Measured before (50 writers of one insert each, this 2-core machine): the
 * main thread was the bottleneck at ~95%, and half of each mutation's time
 * there was SQLite writing its rows and the group's COMMIT; the second core
 * was mostly idle.
 *
 * A commit (`add`) goes into the open group's `GroupLayer`: its documents,
 * index entries and de-duplication record, by key, plus the rows to write.
 * `seal` posts the open group to the thread (one transaction, in order) and
 * starts a new one; its layer stays readable until the thread answers that
 * the group is COMMITted, after which the store's connection sees it in the
 * file. Reads (`layers`, `pendingDocument`, `mergeScan`,
 * `pendingSessionRequest`) look at the layers first, newest first: the file
 * plus the layers is always every commit made so far, since a layer goes
 * only once the file has it, and while both have it they agree.
 *
 * The fsync a `seal(true)` asks for runs on the thread pool after its group's
 * COMMIT, so the groups posted meanwhile (a snapshot posts the open one) are
 * written while it runs.
 *
 * `quiesce` posts the open group and waits, blocking, until the thread has
 * COMMITted everything (not for an fsync): the store's own connection
 * writes only then (schema marks, index registrations, backfill chunks, and
 * groups that keep search indexes, whose upkeep reads its own tables inside
 * the commit), so two connections never write at once.
 *
 * A group the thread fails to write is rolled back there whole, and
 * `failure` is set: nothing more is committed or acknowledged (the store's
 * caller stops, as for a failed fsync).
 *
 * What the thread has done is read from its shared state (the last group
 * COMMITted, the last fsync, whether one failed) as well as from its
 * answers, and acted on by an idempotent `#reconcile`: `quiesce` can run
 * inside a function's window (an inline commit that keeps a search index),
 * where a watchdog may end it at any call, between taking an answer and
 * noting it among others.
 *
 * Usage:
 *   const writer = new GroupWriter(file, { walCapBytes, prune, onCommitted });
 *   writer.add(batch);                 // a commit, readable at once
 *   writer.seal(false);                // posted now, COMMITted by the thread
 *   await writer.seal(true);           // and then fsynced
 *   writer.quiesce();                  // before the store's connection writes
 *   writer.close();                    // before the store's connection closes
 */
import {
  MessageChannel,
  type MessagePort,
  receiveMessageOnPort,
  Worker,
} from "node:worker_threads";
import type { KeyInterval, Order } from "../query/keys.ts";
import type { GroupState, RowBatch } from "./commitRows.mjs";

const WORKER_URL = new URL("./groupWriterWorker.mjs", import.meta.url);
/** Slots of the shared state (groupWriterWorker.mjs). */
const SLOTS = { DONE: 0, CLOSED: 1, SYNCED: 2, FAILED: 3 } as const;
/**
 * The longest a blocking wait (`quiesce`, `close`) waits for the thread: a
 * group's COMMIT and fsync take milliseconds; a disk that hangs longer than
 * this is treated as failed.
 */
const WAIT_MAX_MS = 30_000;

/** A commit as the thread writes it: keys as latin1 strings (a Buffer would be cloned with its whole pool). */
export type WireBatch = RowBatch<string> & {
  lastCreationTime: number;
  counts: Map<number, number>;
};

/** What `add` needs of a commit (sqliteStore.ts `CommitBatch`). */
export type PendingBatch = RowBatch<Buffer> & GroupState;

export type PendingEntry = { key: Buffer; docId: string };

type Answer = {
  seq: number;
  /** The answer to an fsync (a second answer); otherwise to the group's COMMIT. */
  synced?: true;
  walBytes?: number;
  capCheckpoint?: boolean;
  error?: string;
};

/** What waits for a posted group: its COMMIT, or with `sync` its fsync. */
type Waiter = {
  sync: boolean;
  resolve: () => void;
  reject: (error: Error) => void;
};

/** A group being posted (`GroupWriter.seal`), and how far that got. */
type Sealing = {
  seq: number;
  layer: GroupLayer | null;
  waiter: Waiter;
  promise: Promise<void>;
  /** Queued in `#posted`. */
  posted: boolean;
  /** Sent to the thread. */
  sent: boolean;
};

/** One index's entries in a layer: key (latin1) -> document id, or null where the entry was removed. */
type LayerIndex = {
  entries: Map<string, string | null>;
  sorted: string[] | null;
};

/** One group's writes, by key, as the file will have them once the thread has COMMITted it. */
export class GroupLayer {
  /** The highest commit timestamp in it (a snapshot pinned at a later `last_ts` has it in the file). */
  maxTs = 0n;
  readonly documents = new Map<string, string | null>();
  /** Session id -> request id -> the mutation's outcome. */
  readonly sessionRequests = new Map<
    string,
    Map<number, { outcome: string; ts: bigint }>
  >();
  readonly batches: WireBatch[] = [];
  readonly #indexes = new Map<number, LayerIndex>();

  /**
   * Adds a commit. Idempotent, so that a commit a watchdog cut short can be
   * added again (sqliteStore.ts `recoverCut`): every step sets a value
   * computed from the batch, and its rows go in once.
   */
  add(batch: PendingBatch): void {
    const indexWrites = batch.indexWrites.map((write) => ({
      indexId: write.indexId,
      docId: write.docId,
      remove: write.remove === null ? null : write.remove.toString("latin1"),
      add: write.add === null ? null : write.add.toString("latin1"),
    }));
    for (const write of batch.writes) this.documents.set(write.id, write.json);
    for (const write of indexWrites) {
      if (write.remove !== null) this.#set(write.indexId, write.remove, null);
      if (write.add !== null) this.#set(write.indexId, write.add, write.docId);
    }
    const request = batch.sessionRequest;
    if (request !== undefined) {
      let session = this.sessionRequests.get(request.sessionId);
      if (session === undefined) {
        session = new Map();
        this.sessionRequests.set(request.sessionId, session);
      }
      session.set(request.requestId, {
        outcome: request.outcome,
        ts: batch.ts,
      });
    }
    if (batch.ts > this.maxTs) this.maxTs = batch.ts;
    if (this.batches.at(-1)?.ts === batch.ts) return;
    this.batches.push({
      ts: batch.ts,
      lastCreationTime: batch.lastCreationTime,
      counts: batch.counts,
      newTables: batch.newTables,
      newIndexes: batch.newIndexes,
      writes: batch.writes,
      indexWrites,
      sessionRequest: batch.sessionRequest,
    });
  }

  /** Whether the commit's rows are in this group. */
  holds(batch: PendingBatch): boolean {
    return this.batches.some((wire) => wire.ts === batch.ts);
  }

  /** Whether any commit in it wrote an entry of this index. */
  writes(indexId: number): boolean {
    return this.#indexes.has(indexId);
  }

  /** Calls `into` for each of the index's keys in [lo, hi), in ascending order. */
  entriesIn(
    indexId: number,
    lo: string,
    hi: string,
    into: (key: string, docId: string | null) => void,
  ): void {
    const index = this.#indexes.get(indexId);
    if (index === undefined) return;
    // Code-unit order of latin1 strings is the bytes' order.
    const keys = (index.sorted ??= [...index.entries.keys()].sort());
    let low = 0;
    let high = keys.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (keys[mid] < lo) low = mid + 1;
      else high = mid;
    }
    for (let i = low; i < keys.length && keys[i] < hi; i++) {
      into(keys[i], index.entries.get(keys[i])!);
    }
  }

  #set(indexId: number, key: string, docId: string | null): void {
    let index = this.#indexes.get(indexId);
    if (index === undefined) {
      index = { entries: new Map(), sorted: null };
      this.#indexes.set(indexId, index);
    }
    if (!index.entries.has(key)) index.sorted = null;
    index.entries.set(key, docId);
  }
}

/** A document as the layers have it (newest first): its JSON, null if deleted, undefined if no layer wrote it. */
export function pendingDocument(
  layers: readonly GroupLayer[],
  id: string,
): string | null | undefined {
  for (let i = layers.length - 1; i >= 0; i--) {
    const json = layers[i].documents.get(id);
    if (json !== undefined) return json;
  }
  return undefined;
}

export function pendingSessionRequest(
  layers: readonly GroupLayer[],
  sessionId: string,
  requestId: number,
): { outcome: string; ts: bigint } | undefined {
  for (let i = layers.length - 1; i >= 0; i--) {
    const found = layers[i].sessionRequests.get(sessionId)?.get(requestId);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** The highest request id of a session in the layers, or -1. */
export function pendingLatestRequestId(
  layers: readonly GroupLayer[],
  sessionId: string,
): number {
  let latest = -1;
  for (const layer of layers) {
    for (const requestId of layer.sessionRequests.get(sessionId)?.keys() ?? [])
      if (requestId > latest) latest = requestId;
  }
  return latest;
}

/**
 * Up to `limit` entries of an index inside `interval`, in `order`, as the
 * file read by `scan` plus the layers have them. With k of the layers'
 * entries inside the interval, `scan` is asked for limit + k rows: at most k
 * of them are replaced or removed by a layer, so when it returns that many
 * the first `limit` entries up to its last row are exact.
 */
export function mergeScan(
  layers: readonly GroupLayer[],
  indexId: number,
  interval: KeyInterval,
  order: Order,
  limit: number,
  scan: (limit: number) => PendingEntry[],
): PendingEntry[] {
  // Most scans meet no layer that wrote their index: no key conversions then.
  if (!layers.some((layer) => layer.writes(indexId))) return scan(limit);
  let pending: Map<string, string | null> | null = null;
  const lo = interval.lo.toString("latin1");
  const hi = interval.hi.toString("latin1");
  for (const layer of layers) {
    // Oldest first: a newer layer's entry for the same key wins.
    layer.entriesIn(indexId, lo, hi, (key, docId) =>
      (pending ??= new Map()).set(key, docId),
    );
  }
  if (pending === null) return scan(limit);
  const overlay: Map<string, string | null> = pending;
  const asked = limit + overlay.size;
  const rows = scan(asked);
  const merged: { key: string; entry: PendingEntry }[] = [];
  for (const row of rows) {
    const key = row.key.toString("latin1");
    if (!overlay.has(key)) merged.push({ key, entry: row });
  }
  const boundary =
    rows.length < asked ? null : rows[rows.length - 1].key.toString("latin1");
  for (const [key, docId] of overlay) {
    if (docId === null) continue;
    if (
      boundary !== null &&
      (order === "asc" ? key > boundary : key < boundary)
    )
      continue;
    merged.push({ key, entry: { key: Buffer.from(key, "latin1"), docId } });
  }
  const sign = order === "asc" ? 1 : -1;
  merged.sort((a, b) => (a.key < b.key ? -sign : a.key > b.key ? sign : 0));
  return merged.slice(0, limit).map((m) => m.entry);
}

export type GroupWriterOptions = {
  walCapBytes: number;
  prune: { retentionNs: bigint; pruneBatch: number; pruneIntervalNs: bigint };
  /**
   * After groups the thread COMMITted: the `-wal` file's size, and whether it
   * checkpointed at the cap; both unknown (undefined, null) when their answer
   * was lost (`#reconcile`).
   */
  onCommitted: (
    walBytes: number | undefined,
    capCheckpoint: boolean | null,
  ) => void;
};

export class GroupWriter {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #state = new Int32Array(
    new SharedArrayBuffer(Object.keys(SLOTS).length * 4),
  );
  readonly #onCommitted: GroupWriterOptions["onCommitted"];
  #open: GroupLayer | null = null;
  /** Posted groups not yet COMMITted, oldest first, then the open one: what reads look at. */
  #layers: GroupLayer[] = [];
  /** Posted groups whose COMMIT the thread has not answered. */
  readonly #posted: { seq: number; layer: GroupLayer | null }[] = [];
  #seq = 0;
  /** The layer each commit went into, for an `add` repeated after a cut. */
  readonly #placed = new WeakMap<PendingBatch, GroupLayer>();
  /** What waits for each posted group. */
  readonly #waiting = new Map<number, Waiter>();
  /** A seal a watchdog cut short, finished by the next call (`#resumeSeal`). */
  #sealing: Sealing | null = null;
  #failure: Error | null = null;
  /** The last group the thread COMMITted, and fsynced, as far as this side knows. */
  #doneThrough = 0;
  #syncedThrough = 0;
  /** The newest COMMIT answer's report, not yet given to `onCommitted`. */
  #report: { walBytes: number; capCheckpoint: boolean } | null = null;
  #closed = false;
  /** The thread is gone: nothing it could answer is waited for. */
  #exited = false;

  constructor(file: string, options: GroupWriterOptions) {
    this.#onCommitted = options.onCommitted;
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    this.#worker = new Worker(WORKER_URL, {
      workerData: {
        file,
        walCapBytes: options.walCapBytes,
        state: this.#state,
        slots: SLOTS,
        port: port2,
        prune: options.prune,
      },
      transferList: [port2],
      // Plain JavaScript: none of the parent's loader flags (an inherited
      // `--input-type`, say, fails the thread's start).
      execArgv: [],
    });
    this.#worker.unref();
    this.#worker.on("error", (error) => this.#fail(error));
    this.#worker.on("exit", () => {
      this.#exited = true;
      if (!this.#closed)
        this.#fail(new Error("the group writer thread exited"));
    });
    port1.on("message", (answer: Answer) => {
      this.#resumeSeal();
      this.#note(answer);
      this.#reconcile();
    });
    port1.unref();
  }

  /** Set once a group failed to be written: every later commit must stop. */
  get failure(): Error | null {
    return this.#failure;
  }

  /** What reads must look at before the file, oldest first. */
  get layers(): readonly GroupLayer[] {
    return this.#layers;
  }

  /** Posted groups and commits of the open one that the thread has not COMMITted. */
  get busy(): boolean {
    return (
      this.#posted.length > 0 || this.#open !== null || this.#sealing !== null
    );
  }

  /**
   * Adds a commit to the open group. Idempotent (a commit a watchdog cut
   * short is added again): one whose rows went into a group sealed since is
   * not added twice, and one cut before that goes whole into the open group.
   */
  add(batch: PendingBatch): void {
    this.#resumeSeal();
    const placed = this.#placed.get(batch);
    if (placed !== undefined && placed !== this.#open && placed.holds(batch))
      return;
    if (this.#open === null) {
      // Both published with no call between: a cut that left the open layer
      // out of `layers` hid its commits from every read.
      const open = new GroupLayer();
      const layers = [...this.#layers, open];
      this.#layers = layers;
      this.#open = open;
    }
    this.#placed.set(batch, this.#open);
    this.#open.add(batch);
  }

  /**
   * Posts the open group (if it has commits) and, with `sync`, an fsync
   * after it; resolves once the thread has done both. Without `sync`,
   * resolves when the group is COMMITted (the next fsync makes it durable).
   */
  seal(sync: boolean): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    this.#resumeSeal();
    const layer = this.#open;
    if (layer === null && !sync) return Promise.resolve();
    let waiter!: Waiter;
    const promise = new Promise<void>((resolve, reject) => {
      waiter = { sync, resolve, reject };
    });
    const sealing: Sealing = {
      seq: this.#seq + 1,
      layer,
      waiter,
      promise,
      posted: false,
      sent: false,
    };
    // Three assignments with no call between: a cut lands before them all
    // (nothing happened) or after (`#resumeSeal` finishes what follows).
    this.#sealing = sealing;
    this.#open = null;
    this.#seq = sealing.seq;
    this.#finishSeal(sealing);
    return promise;
  }

  /**
   * Posts the group of `sealing`. Runs inside a function's window when an
   * inline commit waits for the thread (`quiesce`), where V8's watchdog ends
   * host code at any call: each step is idempotent or has its flag set right
   * after it, with no call between, so running it again after a cut does
   * only what is left. A cut used to lose commits already reported durable:
   * between taking the open layer and queueing it, the group was never
   * posted (the file never got it); between queueing it and posting it, the
   * next group's answer counted it as written and its layer was dropped.
   */
  #finishSeal(sealing: Sealing): void {
    // Keeps the process up until the thread has answered.
    this.#port.ref();
    this.#waiting.set(sealing.seq, sealing.waiter);
    if (!sealing.posted) {
      this.#posted.push({ seq: sealing.seq, layer: sealing.layer });
      sealing.posted = true;
    }
    if (!sealing.sent) {
      this.#port.postMessage({
        seq: sealing.seq,
        batches: sealing.layer?.batches ?? [],
        sync: sealing.waiter.sync,
      });
      sealing.sent = true;
    }
    this.#sealing = null;
  }

  /** Finishes a seal a cut left half done; its caller, cut too, no longer waits for it. */
  #resumeSeal(): void {
    const sealing = this.#sealing;
    if (sealing === null) return;
    sealing.promise.catch(() => undefined);
    this.#finishSeal(sealing);
  }

  /**
   * Posts the open group and blocks until the thread has answered every
   * group: afterwards the file holds every commit, and no layer is left.
   * Throws the failure if a group failed.
   */
  quiesce(): void {
    this.#resumeSeal();
    this.#reconcile();
    if (this.busy) {
      if (this.#open !== null) void this.seal(false).catch(() => {});
      this.#await(SLOTS.DONE, () => this.#posted.length === 0);
    }
    if (this.#failure !== null) throw this.#failure;
  }

  /**
   * Whether the oldest fsync asked for (`seal(true)`) has returned on the
   * thread while its answer is still on its way (the port delivers it at the
   * event loop's next poll): work that holds the main thread for a slice can
   * end it early, so that what waits for the fsync goes out (subscriptions.ts
   * `#lane`). One atomic read.
   */
  get syncLanded(): boolean {
    const synced = Atomics.load(this.#state, SLOTS.SYNCED);
    for (const [seq, waiter] of this.#waiting)
      if (waiter.sync) return seq <= synced;
    return false;
  }

  /** `seal(true)`, blocking until the fsync has returned (the last commits before a close). */
  syncNow(): void {
    this.#resumeSeal();
    if (this.#failure === null) {
      void this.seal(true).catch(() => {});
      this.#await(SLOTS.SYNCED, () => this.#waiting.size === 0);
    }
    if (this.#failure !== null) throw this.#failure;
  }

  /** Takes answers, blocking on `slot` between them, until `done` or a failure. */
  #await(slot: number, done: () => boolean): void {
    const target = this.#seq;
    const deadline = performance.now() + WAIT_MAX_MS;
    for (;;) {
      this.#take();
      this.#reconcile();
      if (done() || this.#failure !== null) return;
      const left = deadline - performance.now();
      if (left <= 0) {
        this.#fail(new Error("the group writer thread did not answer"));
        return;
      }
      // Answers are posted before their slot moves, so one past the target
      // means they are all here; a short wait rather than a spin otherwise.
      const reached = Atomics.load(this.#state, slot);
      Atomics.wait(
        this.#state,
        slot,
        reached,
        reached < target ? left : Math.min(left, 1),
      );
    }
  }

  /** Writes what is open, then closes the thread's connection, blocking until it has. */
  close(): void {
    if (this.#closed) return;
    try {
      this.quiesce();
    } catch {
      // Closing anyway: what failed was never acknowledged.
    }
    this.#closed = true;
    if (this.#exited) {
      this.#port.close();
      return;
    }
    this.#port.postMessage({ close: true });
    const deadline = performance.now() + WAIT_MAX_MS;
    while (Atomics.load(this.#state, SLOTS.CLOSED) === 0) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      Atomics.wait(this.#state, SLOTS.CLOSED, 0, left);
    }
    this.#port.close();
    void this.#worker.terminate();
  }

  /** Notes every answer that has arrived, without waiting. */
  #take(): void {
    let message;
    while ((message = receiveMessageOnPort(this.#port)) !== undefined)
      this.#note(message.message as Answer);
  }

  /** Notes what an answer says; `#reconcile` acts on it. */
  #note(answer: Answer): void {
    if (answer.error !== undefined) {
      this.#failure ??= new Error(answer.error);
    } else if (answer.synced === true) {
      this.#syncedThrough = Math.max(this.#syncedThrough, answer.seq);
    } else {
      this.#doneThrough = Math.max(this.#doneThrough, answer.seq);
      this.#report = {
        walBytes: answer.walBytes ?? 0,
        capCheckpoint:
          answer.capCheckpoint === true ||
          (this.#report?.capCheckpoint ?? false),
      };
    }
  }

  /**
   * Brings this side up to what the thread has done: drops the layers of the
   * groups it COMMITted, tells `onCommitted`, and settles what waited.
   *
   * Progress is read from the state's slots as well as from answers, and
   * every step is idempotent and leaves a state the next call completes:
   * this runs inside a function's window when an inline commit waits for the
   * thread (`quiesce`, for a commit that keeps a search index), and V8's
   * watchdog ends host code there at any call, with no `finally`. A cut
   * between taking an answer and noting it lost the answer, and the next
   * wait then ran into WAIT_MAX_MS and failed the store (30 s, then every
   * commit refused); a cut inside the old bookkeeping could leave a
   * COMMITted group's layer to shadow later writes.
   */
  #reconcile(): void {
    // DONE and SYNCED before FAILED: the thread sets FAILED after a failed
    // answer is posted and before its slot moves, so slots read before a
    // clear FAILED count only groups and fsyncs that succeeded.
    const done = Atomics.load(this.#state, SLOTS.DONE);
    const synced = Atomics.load(this.#state, SLOTS.SYNCED);
    if (Atomics.load(this.#state, SLOTS.FAILED) !== 0) {
      // Its answer, with the error's text, is here unless a cut lost it.
      if (this.#failure === null) this.#take();
      this.#failure ??= new Error("the group writer thread failed to write");
    } else {
      this.#doneThrough = Math.max(this.#doneThrough, done);
      this.#syncedThrough = Math.max(this.#syncedThrough, synced);
    }
    let committed = false;
    while (
      this.#posted.length > 0 &&
      this.#posted[0].seq <= this.#doneThrough
    ) {
      const { layer } = this.#posted[0];
      // The layer first: a cut before the shift repeats a no-op filter.
      if (layer !== null) {
        this.#layers = this.#layers.filter((other) => other !== layer);
        committed = true;
      }
      this.#posted.shift();
    }
    // A cut before this call skips one report (the next commit's brings the
    // WAL's size up to date); a cut before the reset repeats it.
    if (committed) {
      const report = this.#report;
      this.#onCommitted(report?.walBytes, report?.capCheckpoint ?? null);
      this.#report = null;
    }
    // What the thread did settles first (progress counts only answers and
    // slots that succeeded), then a failure the rest. Settled before
    // deleted: a cut between leaves a second settle, a no-op.
    for (const [seq, waiter] of this.#waiting) {
      if (seq <= (waiter.sync ? this.#syncedThrough : this.#doneThrough))
        waiter.resolve();
      else if (this.#failure !== null) waiter.reject(this.#failure);
      else continue;
      this.#waiting.delete(seq);
    }
    if (this.#waiting.size === 0) this.#port.unref();
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    this.#reconcile();
  }
}
