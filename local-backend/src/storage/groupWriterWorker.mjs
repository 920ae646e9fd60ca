// The thread side of groupWriter.ts: a connection of its own to the database
// file that writes each group of commits the main thread posts, in one
// transaction, COMMITs it and, when asked, fdatasyncs the WAL, so that the
// rows, the COMMIT and the fsync of a group never run on the event loop.
//
// Plain JavaScript, as walCheckpointWorker.mjs (neither tsx nor vitest
// registers its loader in a new worker thread); the rows are commitRows.mjs's,
// as the store's own connection writes them.
//
// Protocol: messages on `port` (a MessagePort of its own, so the main thread
// can also take answers synchronously with `receiveMessageOnPort`):
//   main -> here: { seq, batches, sync } | { close: true }
//   here -> main: { seq, walBytes, capCheckpoint, error? } once the group is
//                 COMMITted, then, with `sync`, { seq, synced: true, error? }
//                 once the fdatasync issued after that COMMIT returned
// and, in `state` (an Int32Array over a SharedArrayBuffer): DONE, the seq of
// the last group answered, SYNCED, the seq of the last fsync answered,
// FAILED once an answer carried an error, and CLOSED once the connection is
// closed, each followed by Atomics.notify, for a main thread that waits. Each
// answer is posted before its slot moves, and FAILED is set after an error's
// answer and before its slot: the main thread reads progress from the slots,
// so an answer it lost (a watchdog cut host code that had just taken it,
// groupWriter.ts `#reconcile`) loses no progress, and a DONE or SYNCED read
// before FAILED is clean when FAILED is not set. The fdatasync runs on the thread pool, so
// the groups posted meanwhile are written and COMMITted while it runs; one
// runs at a time, and the syncs asked for meanwhile share the next one, so
// they are answered in order and SYNCED only grows.
// A group that fails is rolled back whole and answered with its error; the
// main thread then stops all commits (a failed write, as a failed fsync),
// and this thread writes nothing more: every later message, the groups
// already on their way among them, gets the same error (`failure`).
import fs from "node:fs";
import { workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { commitRows } from "./commitRows.mjs";

const { file, walCapBytes, state, slots, port, prune } = workerData;

let db = null;
let rows = null;
let walFd = -1;
let walBytes = 0;
let openError = null;
try {
  db = new Database(file, { timeout: 200 });
  db.pragma("synchronous = NORMAL");
  db.pragma("wal_autocheckpoint = 0");
  db.pragma(`journal_size_limit = ${walCapBytes}`);
  rows = commitRows(db, prune);
  walFd = fs.openSync(`${file}-wal`, "r+");
  walBytes = fs.fstatSync(walFd).size;
} catch (error) {
  openError = error instanceof Error ? error.message : String(error);
}

const keyOf = (key) => Buffer.from(key, "latin1");
const begin = db?.prepare("BEGIN IMMEDIATE");
const commit = db?.prepare("COMMIT");

function writeGroup(batches) {
  const group = { ts: 0n, lastCreationTime: 0, counts: new Map() };
  begin.run();
  try {
    for (const batch of batches) {
      rows.write(batch, keyOf);
      group.ts = batch.ts;
      group.lastCreationTime = batch.lastCreationTime;
      for (const [number, count] of batch.counts)
        group.counts.set(number, count);
    }
    rows.writeGroupState(group);
    commit.run();
  } catch (error) {
    if (db.inTransaction) db.exec("ROLLBACK");
    throw error;
  }
}

/**
 * The first group or fdatasync that failed. From then on nothing is written
 * and every message is answered with it: the groups posted before the main
 * thread learned of it may build on the failed one's writes (a later group
 * COMMITted without it would leave a file no order of commits produces),
 * and a retried fsync may report success for pages the kernel dropped.
 */
let failure = openError;

function handle({ seq, batches }) {
  if (failure !== null) return { seq, error: failure };
  try {
    let capCheckpoint = false;
    if (batches.length > 0) {
      writeGroup(batches);
      const size = fs.fstatSync(walFd).size;
      // The WAL grew past its cap (pinned snapshots kept it from rewinding):
      // copy what the checkpoint worker left, here rather than on the event
      // loop, so that the next BEGIN can rewind it (sqliteStore.ts, "Checkpoints").
      if (size > walBytes && size >= walCapBytes) {
        db.pragma("wal_checkpoint(PASSIVE)");
        capCheckpoint = true;
      }
      walBytes = size;
    }
    return { seq, walBytes, capCheckpoint };
  } catch (error) {
    failure = error instanceof Error ? error.message : String(error);
    return { seq, error: failure };
  }
}

/** Syncs asked for since the fdatasync in flight was issued: the next one answers them. */
let syncsWaiting = [];
let syncing = false;
let closing = false;

function close() {
  port.close();
  try {
    db?.close();
    if (walFd >= 0) fs.closeSync(walFd);
  } finally {
    Atomics.store(state, slots.CLOSED, 1);
    Atomics.notify(state, slots.CLOSED);
  }
}

function synced(seq, error) {
  port.postMessage(
    error === null
      ? { seq, synced: true }
      : { seq, synced: true, error: error.message },
  );
  if (error !== null) Atomics.store(state, slots.FAILED, 1);
  Atomics.store(state, slots.SYNCED, seq);
  Atomics.notify(state, slots.SYNCED);
}

port.on("message", (message) => {
  if (message.close === true) {
    closing = true;
    // An fsync still running closes the connection when it is done.
    if (!syncing) close();
    return;
  }
  const answer = handle(message);
  port.postMessage(answer);
  if (answer.error !== undefined) Atomics.store(state, slots.FAILED, 1);
  Atomics.store(state, slots.DONE, message.seq);
  Atomics.notify(state, slots.DONE);
  if (!message.sync) return;
  if (answer.error !== undefined) {
    synced(message.seq, new Error(answer.error));
    return;
  }
  syncsWaiting.push(message.seq);
  if (!syncing) startSync();
});

function startSync() {
  const covered = syncsWaiting;
  syncsWaiting = [];
  syncing = true;
  fs.fdatasync(walFd, (error) => {
    syncing = false;
    if (error !== null) failure ??= error.message;
    const answer = failure === null ? null : new Error(failure);
    for (const seq of covered) synced(seq, answer);
    if (syncsWaiting.length > 0) {
      if (failure === null) startSync();
      else {
        for (const seq of syncsWaiting) synced(seq, answer);
        syncsWaiting = [];
      }
    }
    if (!syncing && closing) close();
  });
}
