/**
 * Optimistic concurrency for queries: the writes of the commits made while
 * queries run, so that each query, when it finishes, can tell whether what it
 * read could have changed under it.
 *
 * A query runs against the latest committed state as it moves and records its
 * read set (query/readSet.ts). If no commit made during its run wrote into that
 * read set, every read returned what it would return now, so the result is
 * exactly the result of a run at the current timestamp; otherwise the run is
 * discarded and repeated. Convex reaches the same guarantee differently (MVCC:
 * a query reads one snapshot timestamp, convex-backend `crates/database`), and
 * validates mutations the same way, by read-set conflicts (`OCC`).
 *
 * Bounds: entries are kept only while a run that began before them is still
 * going, and never more than MAX_LOGGED_CHANGES document changes; a run whose
 * commits were dropped counts as conflicted. `reset()` (a new build or schema)
 * conflicts every run in flight.
 *
 * Many read sets at once (a socket's queries run at one snapshot) are watched
 * by a `CommitWatch`: filed in one index as their runs end, each checked
 * against a commit's changes once, however often the watch is asked.
 *
 * Usage:
 *   const log = new CommitLog(db);
 *   const mark = log.begin();
 *   ... run the query ...
 *   const valid = !log.conflicts(tx.readSet, mark);   // synchronously, then use db.lastTs
 *   log.end(mark);
 *
 *   const watch = new CommitWatch<Key>(log, mark);   // while the mark is held
 *   watch.add(key, readSet, readsTimestamp);         // as each run ends
 *   watch.conflicted();  // the keys a commit since wrote into (they leave it)
 */
import type { DocumentChange, ReadSet } from "../query/readSet.ts";
import { ReadSetIndex } from "../query/readSetIndex.ts";
import type { Database } from "../storage/database.ts";

/** Document changes kept for runs in flight; past it the oldest commits go. */
const MAX_LOGGED_CHANGES = 10_000;

/** Where a run began: the commits after it are the ones it must not overlap. */
export type CommitMark = { readonly commit: number; readonly epoch: number };

type Entry = { commit: number; changes: readonly DocumentChange[] };

export class CommitLog {
  readonly #db: Database;
  readonly #entries: Entry[] = [];
  /** Index of the first live entry in `#entries` (a queue without shifting). */
  #head = 0;
  #changes = 0;
  /** Commits up to this number were dropped from the log. */
  #droppedThrough: number;
  #epoch = 0;
  /** Runs in flight per starting commit number. */
  readonly #running = new Map<number, number>();
  readonly #unlisten: () => void;

  constructor(db: Database) {
    this.#db = db;
    this.#droppedThrough = db.commitCount;
    this.#unlisten = db.onCommit(({ commit, changes }) =>
      this.#record(commit, changes),
    );
  }

  close(): void {
    this.#unlisten();
  }

  begin(): CommitMark {
    const commit = this.#db.commitCount;
    this.#running.set(commit, (this.#running.get(commit) ?? 0) + 1);
    return { commit, epoch: this.#epoch };
  }

  end(mark: CommitMark): void {
    const count = (this.#running.get(mark.commit) ?? 1) - 1;
    if (count > 0) this.#running.set(mark.commit, count);
    else this.#running.delete(mark.commit);
    this.#trim();
  }

  /** Every run in flight is conflicted (the functions or the schema changed). */
  reset(): void {
    this.#epoch++;
  }

  /**
   * Whether a commit since `mark` wrote into `readSet`, or the log cannot
   * tell (its commits were dropped, or a reset came between).
   * `anyCommit`: the run read something every commit changes (the snapshot ts).
   */
  conflicts(readSet: ReadSet, mark: CommitMark, anyCommit = false): boolean {
    if (mark.epoch !== this.#epoch) return true;
    const latest = this.#db.commitCount;
    if (latest === mark.commit) return false;
    if (anyCommit || mark.commit < this.#droppedThrough) return true;
    // A commit whose listeners have not run yet is not in the log.
    if (this.#lastRecorded() !== latest) return true;
    for (let i = this.#entries.length - 1; i >= this.#head; i--) {
      const entry = this.#entries[i];
      if (entry.commit <= mark.commit) break;
      if (readSet.overlaps(entry.changes)) return true;
    }
    return false;
  }

  /**
   * The document changes of the commits since `mark`, or null when the log
   * cannot tell (as `conflicts`), for checking many read sets at once.
   */
  changesSince(mark: CommitMark): DocumentChange[] | null {
    if (mark.epoch !== this.#epoch) return null;
    const latest = this.#db.commitCount;
    if (latest === mark.commit) return [];
    if (mark.commit < this.#droppedThrough) return null;
    if (this.#lastRecorded() !== latest) return null;
    const changes: DocumentChange[] = [];
    for (let i = this.#head; i < this.#entries.length; i++) {
      const entry = this.#entries[i];
      if (entry.commit > mark.commit) changes.push(...entry.changes);
    }
    return changes;
  }

  /** The number of the latest commit (`Database.commitCount`). */
  get latest(): number {
    return this.#db.commitCount;
  }

  #lastRecorded(): number {
    return this.#entries.length > this.#head
      ? this.#entries[this.#entries.length - 1].commit
      : this.#droppedThrough;
  }

  #record(commit: number, changes: readonly DocumentChange[]): void {
    if (this.#running.size === 0) {
      this.#droppedThrough = commit;
      return;
    }
    this.#entries.push({ commit, changes });
    this.#changes += changes.length;
    this.#trim();
  }

  /** Drops entries no run in flight needs, and the oldest past the bound. */
  #trim(): void {
    let oldest = Infinity;
    for (const commit of this.#running.keys())
      oldest = Math.min(oldest, commit);
    while (this.#head < this.#entries.length) {
      const entry = this.#entries[this.#head];
      if (entry.commit > oldest && this.#changes <= MAX_LOGGED_CHANGES) break;
      this.#droppedThrough = entry.commit;
      this.#changes -= entry.changes.length;
      this.#head++;
    }
    if (this.#head === this.#entries.length) {
      this.#entries.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#entries.length) {
      this.#entries.splice(0, this.#head);
      this.#head = 0;
    }
  }
}

/**
 * Read sets watched for the commits after a mark (a pinned snapshot's): each
 * is filed in one index when its run ends (`add`), and `conflicted` checks
 * only the commits since it was last asked, each change once against all of
 * them (O(changes x log n + conflicts)), so a socket's 10,000 results at a
 * snapshot cost no stretch of filing at the end of their pass, and no log
 * walk per result. A read set leaves the watch at its first conflict.
 *
 * A key is checked against the commits after the watch's check point: its
 * mark at first, then the last `conflicted()` or `moveTo`. So only outcomes
 * of runs at the snapshot of that point may be added (a pass adds each as
 * it ends, and checks once, at its end or when it moves to a newer
 * snapshot); one added after a check would miss the commits before it.
 * The watch reads the log only while the mark it started from is held
 * (`CommitLog.begin` ... `end`), or one it was moved to.
 */
export class CommitWatch<T> {
  readonly #log: CommitLog;
  /** The commits through `commit` have been checked. */
  #checked: CommitMark;
  readonly #index = new ReadSetIndex<T>();
  /** Read sets that read the snapshot's ts, which every commit changes. */
  readonly #anyCommit = new Set<T>();

  constructor(log: CommitLog, mark: CommitMark) {
    this.#log = log;
    this.#checked = mark;
  }

  get size(): number {
    return this.#index.size + this.#anyCommit.size;
  }

  /** Watches `readSet` for `key`; `anyCommit`: every commit conflicts with it. */
  add(key: T, readSet: ReadSet, anyCommit: boolean): void {
    if (anyCommit) this.#anyCommit.add(key);
    else this.#index.set(key, readSet);
  }

  delete(key: T): void {
    this.#anyCommit.delete(key);
    this.#index.delete(key);
  }

  /**
   * The keys that a commit since the last call (since the mark, at first)
   * wrote into, or all of them when the log cannot tell: they leave the
   * watch. Synchronous with using the others as current.
   */
  conflicted(): Set<T> {
    const found = new Set<T>();
    const latest = this.#log.latest;
    const changes = this.#log.changesSince(this.#checked);
    if (changes !== null && latest === this.#checked.commit) return found;
    for (const key of this.#anyCommit) found.add(key);
    this.#anyCommit.clear();
    if (changes === null) {
      for (const key of this.#index.keys()) found.add(key);
      this.#index.clear();
    } else
      for (const change of changes) {
        if (this.#index.size === 0) break;
        const hit = this.#index.affected([change]);
        for (const key of hit) found.add(key);
        this.#index.deleteAll(hit);
      }
    this.#checked = { commit: latest, epoch: this.#checked.epoch };
    return found;
  }

  /**
   * Carries the watch to a newer mark (a newer snapshot's), right after
   * `conflicted()` with no commit between: what it holds was valid at the
   * mark. Otherwise everything it holds conflicts at its next check.
   */
  moveTo(mark: CommitMark): void {
    if (mark.commit !== this.#checked.commit) {
      for (const key of this.#index.keys()) this.#anyCommit.add(key);
      this.#index.clear();
    }
    this.#checked = mark;
  }
}
