/**
 * The commit log that validates optimistic queries: a commit made during a
 * run conflicts with it exactly when it writes into what the run read; commits
 * before the run never do; a reset conflicts every run in flight; and a run
 * whose commits the bounded log had to drop counts as conflicted. A watch of
 * many read sets reports each one whose data a commit since changed, once,
 * however many times it is asked, and all of them when the log cannot tell.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, expect, test } from "vitest";
import { Database } from "../storage/database.ts";
import { CommitLog, CommitWatch } from "./commitLog.ts";
import { Transaction } from "./transaction.ts";

let dir: string;
let db: Database;
let log: CommitLog;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "commit-log-test-"));
  db = Database.open(dir);
  log = new CommitLog(db);
});
afterEach(() => {
  log.close();
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function insert(table: string, count = 1): string[] {
  const tx = new Transaction(db, { readOnly: false });
  const ids = Array.from({ length: count }, (_, i) =>
    tx.insert(table, { n: i }),
  );
  db.commit(tx.pendingWrites());
  return ids;
}

function patch(id: string): void {
  const tx = new Transaction(db, { readOnly: false });
  tx.patch(id, { n: -1 });
  db.commit(tx.pendingWrites());
}

/** An optimistic query's transaction that read one document. */
function reading(id: string): Transaction {
  const tx = new Transaction(db, { readOnly: true, optimistic: true });
  tx.get(id);
  return tx;
}

test("a commit during a run conflicts only when it writes what the run read", () => {
  const [read, other] = insert("docs", 2);
  const mark = log.begin();
  const tx = reading(read);
  patch(other);
  expect(log.conflicts(tx.readSet, mark)).toBe(false);
  patch(read);
  expect(log.conflicts(tx.readSet, mark)).toBe(true);
  log.end(mark);
});

test("commits made before a run began never conflict with it", () => {
  const [read] = insert("docs");
  patch(read);
  const mark = log.begin();
  expect(log.conflicts(reading(read).readSet, mark)).toBe(false);
  log.end(mark);
});

test("a run that read the snapshot timestamp conflicts with any commit", () => {
  const [read] = insert("docs");
  const mark = log.begin();
  const tx = reading(read);
  tx.snapshotTs();
  expect(log.conflicts(tx.readSet, mark, tx.readTimestamp)).toBe(false);
  insert("elsewhere");
  expect(log.conflicts(tx.readSet, mark, tx.readTimestamp)).toBe(true);
  log.end(mark);
});

test("a reset (a new build) conflicts every run in flight", () => {
  const [read] = insert("docs");
  const mark = log.begin();
  log.reset();
  expect(log.conflicts(reading(read).readSet, mark)).toBe(true);
  log.end(mark);
});

test("a run whose commits the bounded log dropped counts as conflicted", () => {
  const [read] = insert("docs");
  const mark = log.begin();
  const tx = reading(read);
  // One commit over the log's bound of 10,000 document changes.
  insert("bulk", 10_001);
  expect(log.conflicts(tx.readSet, mark)).toBe(true);
  log.end(mark);
  // A run that began after the dropped commit is judged normally again.
  const later = log.begin();
  insert("bulk");
  expect(log.conflicts(reading(read).readSet, later)).toBe(false);
  log.end(later);
});

test("the changes since a mark are those of the commits after it, none before, and unknown after a reset", () => {
  const [before] = insert("docs");
  const mark = log.begin();
  expect(log.changesSince(mark)).toEqual([]);
  const [first] = insert("docs");
  patch(before);
  expect(log.changesSince(mark)!.map((change) => change.id)).toEqual([
    first,
    before,
  ]);
  log.reset();
  expect(log.changesSince(mark)).toBeNull();
  log.end(mark);
});

test("a watch reports each read set a commit since wrote into, once, and keeps the others", () => {
  const ids = insert("docs", 4);
  const mark = log.begin();
  const watch = new CommitWatch<string>(log, mark);
  // Runs end at different times: a read set added after a commit is
  // still checked against it.
  watch.add("a", reading(ids[0]).readSet, false);
  patch(ids[0]);
  watch.add("b", reading(ids[1]).readSet, false);
  watch.add("c", reading(ids[2]).readSet, false);
  const stamped = reading(ids[3]);
  stamped.snapshotTs();
  watch.add("ts", stamped.readSet, stamped.readTimestamp);
  expect(watch.conflicted()).toEqual(new Set(["a", "ts"]));
  // Asked again with no commit between: nothing new.
  expect(watch.conflicted()).toEqual(new Set());
  patch(ids[3]);
  expect(watch.conflicted()).toEqual(new Set());
  patch(ids[1]);
  // A read set deleted from the watch is no longer reported.
  watch.delete("c");
  patch(ids[2]);
  expect(watch.conflicted()).toEqual(new Set(["b"]));
  expect(watch.size).toBe(0);
  log.end(mark);
});

test("a watch moved to a newer mark keeps what was valid there, and a reset conflicts all it holds", () => {
  const [read, other] = insert("docs", 2);
  const mark = log.begin();
  const watch = new CommitWatch<string>(log, mark);
  watch.add("read", reading(read).readSet, false);
  watch.add("other", reading(other).readSet, false);
  patch(other);
  expect(watch.conflicted()).toEqual(new Set(["other"]));
  const newer = log.begin();
  log.end(mark);
  watch.moveTo(newer);
  insert("elsewhere");
  expect(watch.conflicted()).toEqual(new Set());
  patch(read);
  expect(watch.conflicted()).toEqual(new Set(["read"]));
  // Moved to a mark it was not checked up to: it cannot tell, so all conflict.
  watch.add("again", reading(read).readSet, false);
  const stale = { commit: newer.commit, epoch: newer.epoch };
  watch.moveTo(stale);
  insert("elsewhere");
  expect(watch.conflicted()).toEqual(new Set(["again"]));
  watch.add("reset", reading(read).readSet, false);
  log.reset();
  expect(watch.conflicted()).toEqual(new Set(["reset"]));
  log.end(newer);
});
