// The thread side of walCheckpointer.ts: a connection of its own to the
// database file that copies the WAL into it (`PRAGMA wal_checkpoint(PASSIVE)`)
// when the main thread asks, at most once per `intervalMs`, and once per
// `idleMs` unasked, so that the checkpoint's fsyncs and page copies never run
// on the event loop.
//
// Plain JavaScript, as nodeWorkerBoot.mjs: neither tsx nor vitest registers
// its loader in a new worker thread, and this needs nothing else.
//
// Protocol (an Int32Array over a SharedArrayBuffer, slots in walCheckpointer.ts):
// the main thread bumps REQUESTS after each group COMMIT (setting URGENT when
// it waits for the checkpoint), sets HOLD while it checkpoints itself and STOP
// to close; this thread sets CHECKPOINTS, WAL_FRAMES, BACKFILLED and SERVED
// (the REQUESTS count it began with) after each checkpoint,
// FAILED if one threw, and CLOSED once its connection is closed.
import { workerData } from "node:worker_threads";
import Database from "better-sqlite3";

const { file, state, slots, intervalMs, idleMs } = workerData;

let db;
try {
  db = new Database(file, { timeout: 0 });
  db.pragma("synchronous = NORMAL");
  let handled = Atomics.load(state, slots.REQUESTS);
  let last = 0;
  while (Atomics.load(state, slots.STOP) === 0) {
    if (Atomics.load(state, slots.HOLD) === 1) {
      // The main thread checkpoints itself (its WAL cap): do not take the lock.
      Atomics.wait(state, slots.HOLD, 1, intervalMs);
      continue;
    }
    const requested = Atomics.load(state, slots.REQUESTS);
    if (requested === handled) {
      // Unasked, once per idleMs, for the small writes that do not ask. A
      // checkpoint with nothing new to copy costs no I/O.
      if (
        Atomics.wait(state, slots.REQUESTS, requested, idleMs) !== "timed-out"
      )
        continue;
    } else if (Atomics.load(state, slots.URGENT) === 0) {
      const early = last + intervalMs - performance.now();
      if (early > 0) {
        // Woken early by STOP, or by an urgent request.
        Atomics.wait(state, slots.STOP, 0, early);
        continue;
      }
    }
    Atomics.store(state, slots.URGENT, 0);
    handled = requested;
    last = performance.now();
    try {
      const [result] = db.pragma("wal_checkpoint(PASSIVE)");
      // Busy: the main thread's own checkpoint holds the lock (its WAL cap).
      if (result.busy === 0) {
        Atomics.store(state, slots.WAL_FRAMES, result.log);
        Atomics.store(state, slots.BACKFILLED, result.checkpointed);
        Atomics.store(state, slots.SERVED, handled);
        Atomics.add(state, slots.CHECKPOINTS, 1);
        Atomics.notify(state, slots.CHECKPOINTS);
      }
    } catch {
      // An I/O error: the main thread's own checkpoint at the WAL cap reports it.
      Atomics.add(state, slots.FAILED, 1);
    }
  }
} finally {
  db?.close();
  Atomics.store(state, slots.CLOSED, 1);
  Atomics.notify(state, slots.CLOSED);
}
