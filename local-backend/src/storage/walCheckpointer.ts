/**
 * WAL checkpoints off the event loop (issue 7). SQLite's automatic checkpoint
 * runs inside the COMMIT that pushes the WAL past 1000 pages, on the calling
 * thread: it fsyncs the WAL, copies every frame into the database file and
 * fsyncs that (sqlite.org `wal.html#automatic_checkpoint`), 10 ms and more of
 * a held event loop with a busy disk. The store turns it off
 * (`wal_autocheckpoint = 0`) and this runs the same PASSIVE checkpoint on a
 * worker thread with a connection of its own (walCheckpointWorker.mjs), which
 * never blocks a writer: it copies what is committed and leaves the rest.
 *
 * The main thread asks after each group's COMMIT (`request`: an atomic add and
 * a futex wake, no message to post or receive); the worker checkpoints at most
 * once per CHECKPOINT_INTERVAL_MS (a burst of groups shares one), and once per
 * IDLE_CHECKPOINT_MS unasked, for the small writes that do not ask (schema
 * marks, index registrations; backfill chunks and drops do).
 *
 * What a worker cannot do alone is restart the WAL: SQLite rewinds it only at
 * a write transaction that began while every frame was already copied
 * (`wal.c` `walRestartLog`), and under a stream of groups the next BEGIN
 * follows each COMMIT too closely for that. The store therefore bounds the
 * file itself (`SqliteStore`, WAL_CAP_BYTES).
 *
 * Lifecycle: started by `SqliteStore.open`; `close` stops it and waits, a
 * bounded time, until its connection is closed, because the last connection
 * to close is the one that checkpoints and deletes the WAL (the store's own).
 * A worker that fails to start or dies calls `onLost`, and the store goes back
 * to SQLite's own checkpoints.
 *
 * Usage:
 *   const checkpointer = new WalCheckpointer(file, () => fallBack());
 *   checkpointer.request();      // after a COMMIT
 *   checkpointer.close();        // before closing the main connection
 */
import { Worker } from "node:worker_threads";

const WORKER_URL = new URL("./walCheckpointWorker.mjs", import.meta.url);
/** Slots of the shared state (walCheckpointWorker.mjs documents who writes which). */
const SLOTS = {
  REQUESTS: 0,
  STOP: 1,
  CLOSED: 2,
  CHECKPOINTS: 3,
  WAL_FRAMES: 4,
  BACKFILLED: 5,
  FAILED: 6,
  HOLD: 7,
  /** The REQUESTS count the last completed checkpoint began with. */
  SERVED: 8,
  /** The next requested checkpoint starts without waiting out CHECKPOINT_INTERVAL_MS. */
  URGENT: 9,
} as const;
/**
 * The worker's pace under a stream of commits. Shorter leaves less for the
 * main thread's checkpoint at the WAL cap (a 100k-document backfill reaches
 * it a dozen times: 4 ms each at 10 ms, 15 ms at 50 ms), at the price of more
 * fsyncs on the worker's thread; commit throughput measured the same.
 */
const CHECKPOINT_INTERVAL_MS = 10;
/** How often the worker checkpoints unasked, for writes that do not ask. */
const IDLE_CHECKPOINT_MS = 1000;
/** A checkpoint in flight finishes before the worker closes; a disk that hangs longer is not waited for. */
const CLOSE_WAIT_MS = 10_000;

export type CheckpointStats = {
  /** Checkpoints the worker has completed. */
  checkpoints: number;
  /** Requests made before the last of them began (`request` returns the count). */
  served: number;
  /** Frames in the WAL, and how many of them were in the database file, at the last one. */
  walFrames: number;
  backfilled: number;
  failed: number;
};

export class WalCheckpointer {
  readonly #worker: Worker;
  readonly #state = new Int32Array(
    new SharedArrayBuffer(Object.keys(SLOTS).length * 4),
  );
  #alive = true;

  constructor(file: string, onLost: () => void) {
    this.#worker = new Worker(WORKER_URL, {
      workerData: {
        file,
        state: this.#state,
        slots: SLOTS,
        intervalMs: CHECKPOINT_INTERVAL_MS,
        idleMs: IDLE_CHECKPOINT_MS,
      },
      // The worker is plain JavaScript: the parent's loader flags (tsx) would only slow its start.
      execArgv: [],
    });
    this.#worker.unref();
    const lost = () => {
      if (!this.#alive) return;
      this.#alive = false;
      if (Atomics.load(this.#state, SLOTS.STOP) === 0) onLost();
    };
    this.#worker.on("error", lost);
    this.#worker.on("exit", lost);
  }

  /**
   * Keeps the worker from starting a checkpoint (`true`) while the main
   * thread needs the checkpoint lock for its own, or lets it go again.
   */
  hold(held: boolean): void {
    Atomics.store(this.#state, SLOTS.HOLD, held ? 1 : 0);
    if (!held) Atomics.notify(this.#state, SLOTS.HOLD);
  }

  /**
   * Something was committed: checkpoint it soon, or at once when `urgent`.
   * Returns the request's number: a checkpoint with `stats.served` at least
   * that began after it.
   */
  request(urgent = false): number {
    if (urgent) Atomics.store(this.#state, SLOTS.URGENT, 1);
    const count = Atomics.add(this.#state, SLOTS.REQUESTS, 1) + 1;
    Atomics.notify(this.#state, SLOTS.REQUESTS);
    // The worker may be waiting out its interval on STOP.
    if (urgent) Atomics.notify(this.#state, SLOTS.STOP);
    return count;
  }

  /** Whether the worker runs (it may fail to start, or die). */
  get alive(): boolean {
    return this.#alive;
  }

  /** Resolves when the worker completes its next checkpoint, or after `timeoutMs`. */
  async nextCheckpoint(timeoutMs: number): Promise<void> {
    const seen = Atomics.load(this.#state, SLOTS.CHECKPOINTS);
    const waited = (
      Atomics as unknown as {
        waitAsync(
          array: Int32Array,
          index: number,
          value: number,
          timeout: number,
        ): { async: boolean; value: Promise<string> | string };
      }
    ).waitAsync(this.#state, SLOTS.CHECKPOINTS, seen, timeoutMs);
    if (!waited.async) return;
    // A pending `waitAsync` does not keep the event loop alive; a timer does.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      waited.value,
      new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
    ]);
    clearTimeout(timer);
  }

  get stats(): CheckpointStats {
    return {
      checkpoints: Atomics.load(this.#state, SLOTS.CHECKPOINTS),
      served: Atomics.load(this.#state, SLOTS.SERVED),
      walFrames: Atomics.load(this.#state, SLOTS.WAL_FRAMES),
      backfilled: Atomics.load(this.#state, SLOTS.BACKFILLED),
      failed: Atomics.load(this.#state, SLOTS.FAILED),
    };
  }

  /** Stops the worker once its checkpoint in flight is done, and waits for its connection to close. */
  close(): void {
    Atomics.store(this.#state, SLOTS.STOP, 1);
    Atomics.notify(this.#state, SLOTS.STOP);
    Atomics.notify(this.#state, SLOTS.REQUESTS);
    Atomics.notify(this.#state, SLOTS.HOLD);
    if (this.#alive) Atomics.wait(this.#state, SLOTS.CLOSED, 0, CLOSE_WAIT_MS);
    this.#alive = false;
    void this.#worker.terminate();
  }
}
