/**
 * Durable storage for the embedded backend: one SQLite file per data directory,
 * holding documents, index entries and the mutation de-duplication records.
 *
 * SQLite is the source of truth; nothing is loaded into memory at start-up
 * beyond the table and index registry. Documents are Convex JSON keyed by id;
 * every index (the built-in `by_id` and `by_creation_time` too) is a set of
 * rows `(index_id, key, doc_id)` whose key is the byte-comparable encoding of
 * the document's index values with the `_creationTime, _id` suffix
 * (query/keys.ts), so keys are unique and SQLite's BLOB order is Convex's order.
 * Range scans run in SQLite and are read in pages (`scanIndex`).
 *
 * A commit is one SQLite transaction holding the changed documents, their
 * index entries, table counts, the new commit timestamp and the mutation's
 * de-duplication record, so either all of it survives a crash or none of it.
 *
 * Durability (group commit). WAL with `synchronous = NORMAL`: a COMMIT
 * appends its frames to the `-wal` file with write() and returns without an
 * fsync, so a commit survives a process crash (the frames are in the OS page
 * cache) but not yet a power loss. `sync()` makes every commit that returned
 * before it was called durable with one fdatasync of the `-wal` file, on the
 * libuv thread pool, so the event loop keeps running meanwhile; the database
 * acknowledges nothing before that (database.ts, "Durability"). This is what
 * `synchronous = FULL` does inside each COMMIT (an fsync of the WAL after its
 * frames, sqlite `wal.c` `sqlite3WalFrames`), once per group instead of once
 * per commit. Why it is enough:
 * - fdatasync flushes the file's written data whichever descriptor wrote it
 *   (fsync(2); PostgreSQL's checkpointer relies on the same), and a recovering
 *   SQLite replays every WAL frame up to the last valid commit frame;
 * - with NORMAL (the checkpoint worker's connection too) a checkpoint still
 *   fsyncs the WAL before copying it into the database file and fsyncs that
 *   file before the WAL is reused (sqlite.org
 *   `pragma.html#pragma_synchronous`), so restarting the WAL never drops a
 *   frame that `sync()` made durable;
 * - the `-wal` file keeps its inode while the connection is open (SQLite
 *   deletes it only when the last connection closes, ours, and shortens it
 *   in place under `journal_size_limit`); its directory entry, and whatever
 *   a crashed predecessor left unsynced, are fsynced once at open.
 * The commits of a group share one SQLite transaction, so the pages they all
 * touch (index and table pages, the clocks) are written to the WAL once per
 * group rather than once per commit (the table counts and clocks are written
 * once too, the last commit's, at the COMMIT); a crash before the COMMIT
 * loses the group whole, and nothing in it was acknowledged.
 *
 * The group writer (groupWriter.ts). A group's rows, its COMMIT and its
 * fdatasync run on a thread of their own with a connection of its own, not
 * on the event loop: with 50 writers of one insert each, the main thread
 * was the bottleneck and half of its time went to those rows and COMMITs
 * (issue 7). A commit is added to the open group in memory (its layer),
 * `sync()` and `snapshot()` post the group to the thread, and every read
 * here (`getDocument`, `scanIndex`, `findSessionRequest`, snapshots) looks
 * at the layers of groups the thread has not COMMITted before the file.
 * Writes with this connection (schema marks, index registrations, backfill
 * chunks, through `quiesceWriter` the search indexes' tables) first wait,
 * blocking, until the thread has COMMITted every group (`#quiesce`), so the
 * two connections never write at once. A commit that keeps a search or
 * vector index (`inTransaction`, whose upkeep reads those tables inside the
 * transaction) is instead a savepoint of a group of this connection, as all
 * commits of that group after it: one that fails there rolls back to its
 * savepoint only. A group the thread fails to write is lost whole, and
 * every later commit fails (`CommitGroupLostError`), as after a failed fsync.
 *
 * Checkpoints (walCheckpointer.ts). SQLite's automatic checkpoint would run
 * inside a COMMIT on the event loop; it is off, and a worker thread with its
 * own connection copies the WAL into the database file instead. The WAL
 * rewinds to its start at a BEGIN that finds every frame copied, which a
 * stream of groups with no pause in between never offers, so the file could
 * grow without end. The file grows only while the WAL holds more frames than
 * it ever did; a COMMIT that finds it grown past WAL_CAP_BYTES checkpoints on
 * this connection too (what the worker's last run left, a few ms), the WAL
 * rewinds at the BEGIN after it, and `journal_size_limit` trims what went
 * past the cap. The file keeps its size otherwise, so frames overwrite
 * allocated blocks: cutting it back further at each rewind cost an ftruncate
 * of ~20 ms on the event loop, and growing it again slower fsyncs.
 *
 * Snapshots (`snapshot`). Reads that must see one state across event-loop
 * turns while writers go on use reader connections of their own (at most
 * MAX_SNAPSHOTS), each in a read transaction (a WAL reader's snapshot,
 * https://sqlite.org/wal.html "Concurrency") begun once the open group was
 * COMMITted or posted to the group writer, plus the layers of the groups
 * after the `last_ts` it read, so it sees every commit made so far and none
 * after. While one is
 * pinned, checkpoints cannot copy or rewind past it, so it is held only for
 * the reads of one pass, and no longer than the WAL file takes to grow by
 * its cap (`expired`); while the file is over twice its cap, none is pinned.
 *
 * A second backend process must not open the same data directory. The worker
 * needs a second connection, so the database itself cannot be held in
 * `locking_mode = EXCLUSIVE`; a lock file is instead: `<file>.lock`, an empty
 * SQLite database held exclusively (its fcntl lock goes with the process, even
 * a killed one, which a PID file's would not).
 *
 * Storage versions: "1" had documents only (indexes were rebuilt in memory at
 * every start); "2" adds `indexes`, `index_entries` and table counts. A version
 * 1 folder is migrated on open (`migrateFromV1`).
 *
 * Usage:
 *   const store = SqliteStore.open(path.join(dataDir, "db.sqlite3"));
 *   const registry = store.loadRegistry();
 *   store.scanIndex(indexId, interval, "asc", 100);
 *   store.commit({ ts, newTables, newIndexes, writes, indexWrites, ... });
 *   await store.sync();                      // now durable
 */
import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { type JSONValue, jsonToConvex, type Value } from "convex/values";
import { indexKey, indexedFieldsWithSuffix } from "../query/indexRange.ts";
import { encodeKey, type KeyInterval, type Order } from "../query/keys.ts";
import { type CheckpointStats, WalCheckpointer } from "./walCheckpointer.ts";
import { type CommitRows, commitRows } from "./commitRows.mjs";
import {
  GroupWriter,
  mergeScan,
  pendingDocument,
  pendingLatestRequestId,
  pendingSessionRequest,
  type GroupLayer,
} from "./groupWriter.ts";

export const SCHEMA_VERSION = "2";

/** Session requests older than this (in commit timestamps) are forgotten. A
 *  client that reconnects resends only mutations it has not seen confirmed, so a
 *  week is far longer than any retry window (the real backend keeps
 *  `_session_requests` for a bounded time too). */
export const SESSION_REQUEST_RETENTION_NS = 7n * 24n * 3600n * 1_000_000_000n;

/**
 * At most this many expired session requests are deleted at a group's COMMIT
 * (`#writeGroupState`), through their `ts` index: one a mutation, they would
 * otherwise grow the file by every mutation ever run (about 135 bytes each),
 * and a start-up that deleted them scanned them all. A backlog (a data
 * directory left for weeks) drains over the next groups, a batch each.
 */
export const SESSION_REQUEST_PRUNE_BATCH = 500;

/** After a prune that left nothing expired, the next one waits this long (commit timestamps). */
const SESSION_REQUEST_PRUNE_INTERVAL_NS = 60n * 1_000_000_000n;

export type StoredTable = { name: string; number: number; count: number };

export type IndexState = "ready" | "backfilling";

export type StoredIndex = {
  indexId: number;
  tableNumber: number;
  name: string;
  /** Every key field, the `_creationTime, _id` suffix included. */
  keyFields: string[];
  state: IndexState;
};

export type DocumentWrite =
  | { id: string; tableNumber: number; json: string }
  | { id: string; tableNumber: number; json: null };

/** One index entry to remove and/or add for a written document. */
export type IndexWrite = {
  indexId: number;
  docId: string;
  remove: Buffer | null;
  add: Buffer | null;
};

export type SessionRequestRecord = {
  sessionId: string;
  requestId: number;
  /** JSON of the mutation's outcome, replayed verbatim on a retry. */
  outcome: string;
};

export type CommitBatch = {
  ts: bigint;
  lastCreationTime: number;
  newTables: StoredTable[];
  newIndexes: StoredIndex[];
  writes: DocumentWrite[];
  indexWrites: IndexWrite[];
  /** New document counts of the tables this commit changed. */
  counts: Map<number, number>;
  sessionRequest?: SessionRequestRecord | undefined;
  /** Runs last inside the commit's SQLite transaction (search index upkeep). */
  inTransaction?: (() => void) | undefined;
};

/**
 * How far `SqliteStore.commit` got (0 to 5), for `recoverCut`, and whether
 * it went to the group writer's thread (`viaWriter`) or to a savepoint of
 * the store's own connection.
 */
export type CommitProgress = { step: number; viaWriter?: boolean };

/** Each commit's savepoint inside its group's transaction. */
const COMMIT_SAVEPOINT = "local_backend_commit";

export type Registry = {
  lastTs: bigint;
  lastCreationTime: number;
  tables: StoredTable[];
  indexes: StoredIndex[];
};

export type IndexEntry = { key: Buffer; docId: string };

/** Sessions whose highest request id is kept (`#latestRequestIds`). */
const LATEST_REQUEST_IDS_CACHED = 100_000;

/** Past this, the WAL is checkpointed on the main thread so that it can rewind (see the module comment). */
const WAL_CAP_BYTES = 64 << 20;

/**
 * Snapshots pinned at once (`snapshot`), each on a reader connection of its
 * own: as many as the fan-out's lanes, which pin one each at most.
 */
export const MAX_SNAPSHOTS = 4;

/**
 * Committed state as of the moment it was pinned, whatever commits land after
 * (a read transaction of a connection of its own: SQLite WAL readers see the
 * database as of their first read). Release it soon: while it is pinned the
 * WAL cannot be copied or rewound past it.
 */
export type StoreSnapshot = {
  /**
   * The WAL file grew by its cap since the pin (it cannot rewind past a
   * pinned reader): release it, and pin a newer one if need be.
   */
  expired(): boolean;
  getDocument(id: string): string | null;
  scanIndex(
    indexId: number,
    interval: KeyInterval,
    order: Order,
    limit: number,
  ): IndexEntry[];
  release(): void;
};

/** A reader connection and its statements (`snapshot`). */
type Reader = {
  db: Database.Database;
  begin: Database.Statement<[]>;
  pin: Database.Statement<[]>;
  end: Database.Statement<[]>;
  getDocument: Database.Statement<[string]>;
  scanAsc: Database.Statement<[number, Buffer, Buffer, number]>;
  scanDesc: Database.Statement<[number, Buffer, Buffer, number]>;
};

/** A background writer's longest wait for the checkpoint worker before it writes on (`roomInWal`). */
const ROOM_WAIT_MAX_MS = 1000;

export type StoreOptions = {
  /** WAL_CAP_BYTES, smaller in tests. */
  walCapBytes?: number;
};

export class SqliteStore {
  readonly #db: Database.Database;
  /** Held open, exclusively, for as long as the store is: see `lockDataFile`. */
  readonly #lock: Database.Database;
  readonly #checkpointer: WalCheckpointer;
  readonly #walCapBytes: number;
  /** The `-wal` file's size after the last commit: it grows only while the WAL does not rewind. */
  #walBytes = 0;
  /** The worker is held (`WalCheckpointer.hold`) until the WAL rewinds. */
  #holding = false;
  /** The checkpoint request made after the last commit (`roomInWal`). */
  #requestAtCommit = 0;
  /** Checkpoints this connection ran at the WAL cap, on the event loop. */
  #capCheckpoints = 0;
  /** Checkpoints the group writer's thread ran at the WAL cap. */
  #writerCapCheckpoints = 0;
  /** The `-wal` file, for `sync()`; closed once the connection and every sync are done. */
  readonly #walFd: number;
  #syncsInFlight = 0;
  /**
   * A group's SQLite transaction is open: BEGIN at the first commit after a
   * sync, COMMIT when the next sync starts (`#endGroup`).
   */
  #groupOpen = false;
  /**
   * What the open group's commits leave in `tables.count` and the clocks in
   * `meta`: the last value of each, written once, at the group's COMMIT
   * (`#writeGroupState`), rather than by each commit (three statements of
   * its ten). Null while no commit of the group has succeeded.
   */
  #groupState: {
    ts: bigint;
    lastCreationTime: number;
    counts: Map<number, number>;
  } | null = null;
  /** The rows of commits and groups, as the group writer's thread writes them too. */
  readonly #rows: CommitRows;
  /** Groups of commits written, COMMITted and fsynced on a thread of their own (groupWriter.ts). */
  readonly #writer: GroupWriter;
  readonly #savepoint: Database.Statement<[]>;
  readonly #releaseSavepoint: Database.Statement<[]>;
  readonly #rollbackToSavepoint: Database.Statement<[]>;
  readonly #findSessionRequest: Database.Statement<[string, number]>;
  readonly #latestSessionRequest: Database.Statement<[string]>;
  /**
   * The highest request id stored for a session, once looked up: a client
   * numbers its requests upwards (convex 1.48 `request_manager.ts`), so a
   * request above it is new and needs no lookup (one SELECT per mutation).
   * Records are only added by `commit` (which raises it), and pruning only
   * deletes them, so it stays an upper bound. Bounded by clearing, as a cache.
   */
  readonly #latestRequestIds = new Map<string, number>();
  readonly #getDocument: Database.Statement<[string]>;
  readonly #scanAsc: Database.Statement<[number, Buffer, Buffer, number]>;
  readonly #scanDesc: Database.Statement<[number, Buffer, Buffer, number]>;
  /** Reader connections not pinned now, and all of them (closed with the store). */
  readonly #idleReaders: Reader[] = [];
  readonly #readers = new Set<Reader>();
  #pinned = 0;

  private constructor(
    db: Database.Database,
    lock: Database.Database,
    walFd: number,
    walCapBytes: number,
  ) {
    this.#db = db;
    this.#lock = lock;
    this.#walFd = walFd;
    this.#walCapBytes = walCapBytes;
    this.#checkpointer = new WalCheckpointer(db.name, () => {
      // No worker: SQLite's own checkpoints, inside COMMIT, as before.
      if (db.open) db.pragma("wal_autocheckpoint = 1000");
    });
    afterBackfill.set(db, () => this.#afterCommit());
    beforeWrite.set(db, () => this.#quiesce());
    const prune = {
      retentionNs: SESSION_REQUEST_RETENTION_NS,
      pruneBatch: SESSION_REQUEST_PRUNE_BATCH,
      pruneIntervalNs: SESSION_REQUEST_PRUNE_INTERVAL_NS,
    };
    this.#rows = commitRows(db, prune);
    this.#writer = new GroupWriter(db.name, {
      walCapBytes,
      prune,
      onCommitted: (walBytes, capCheckpoint) =>
        this.#afterCommit(walBytes, capCheckpoint),
    });
    this.#findSessionRequest = db
      .prepare<[string, number]>(
        "SELECT outcome, ts FROM session_requests WHERE session_id = ? AND request_id = ?",
      )
      .safeIntegers(true);
    this.#latestSessionRequest = db
      .prepare<[string]>(
        "SELECT MAX(request_id) FROM session_requests WHERE session_id = ?",
      )
      .pluck();
    this.#getDocument = db.prepare("SELECT json FROM documents WHERE id = ?");
    this.#scanAsc = db.prepare(
      "SELECT key, doc_id AS docId FROM index_entries WHERE index_id = ? AND key >= ? AND key < ? ORDER BY key ASC LIMIT ?",
    );
    this.#scanDesc = db.prepare(
      "SELECT key, doc_id AS docId FROM index_entries WHERE index_id = ? AND key >= ? AND key < ? ORDER BY key DESC LIMIT ?",
    );
    this.#savepoint = db.prepare(`SAVEPOINT ${COMMIT_SAVEPOINT}`);
    this.#releaseSavepoint = db.prepare(`RELEASE ${COMMIT_SAVEPOINT}`);
    this.#rollbackToSavepoint = db.prepare(`ROLLBACK TO ${COMMIT_SAVEPOINT}`);
  }

  /**
   * Opens (creating if needed) the database file, after taking its lock file.
   * Throws `DataDirectoryLockedError` when another process holds it.
   */
  static open(file: string, options: StoreOptions = {}): SqliteStore {
    const lock = lockDataFile(file);
    let db: Database.Database | undefined;
    let walFd: number;
    try {
      db = new Database(file, { timeout: 200 });
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = NORMAL");
      db.pragma("wal_autocheckpoint = 0");
      migrate(db);
      walFd = fs.openSync(`${file}-wal`, "r+");
    } catch (error) {
      db?.close();
      lock.close();
      throw error;
    }
    fs.fdatasyncSync(walFd);
    fsyncDirectory(path.dirname(file));
    const walCapBytes = options.walCapBytes ?? WAL_CAP_BYTES;
    db.pragma(`journal_size_limit = ${walCapBytes}`);
    return new SqliteStore(db, lock, walFd, walCapBytes);
  }

  /** Tables, indexes and clocks: everything start-up needs, independent of the number of documents. */
  loadRegistry(): Registry {
    const meta = (key: string) =>
      (
        this.#db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as
          { value: string } | undefined
      )?.value;
    const lastTs = BigInt(meta("last_ts") ?? "0");
    const lastCreationTime = Number(meta("last_creation_time") ?? "0");
    const tables = this.#db
      .prepare("SELECT name, number, count FROM tables ORDER BY number")
      .all() as StoredTable[];
    const indexes = (
      this.#db
        .prepare(
          "SELECT index_id AS indexId, table_number AS tableNumber, name, fields, state FROM indexes ORDER BY index_id",
        )
        .all() as (Omit<StoredIndex, "keyFields"> & { fields: string })[]
    ).map(({ fields, ...rest }) => ({
      ...rest,
      keyFields: JSON.parse(fields) as string[],
    }));
    return { lastTs, lastCreationTime, tables, indexes };
  }

  /** A committed document's Convex JSON, or null (commits the group writer has not written yet included). */
  getDocument(id: string): string | null {
    const pending = pendingDocument(this.#writer.layers, id);
    if (pending !== undefined) return pending;
    const row = this.#getDocument.get(id) as { json: string } | undefined;
    return row?.json ?? null;
  }

  /** Up to `limit` entries of an index inside `interval`, in `order`. */
  scanIndex(
    indexId: number,
    interval: KeyInterval,
    order: Order,
    limit: number,
  ): IndexEntry[] {
    const statement = order === "asc" ? this.#scanAsc : this.#scanDesc;
    return mergeScan(
      this.#writer.layers,
      indexId,
      interval,
      order,
      limit,
      (rows) =>
        statement.all(indexId, interval.lo, interval.hi, rows) as IndexEntry[],
    );
  }

  /**
   * Pins a snapshot of every commit made so far, or null while MAX_SNAPSHOTS
   * are pinned. For reads that must see one state across event-loop turns
   * while writers go on. The open group is COMMITted first (its fsync still
   * comes at the next `sync()`), or, if it goes to the group writer, posted
   * there: the snapshot reads the groups its reader does not see yet (those
   * after the `last_ts` it pinned) from their layers, which no later commit
   * changes.
   */
  snapshot(): StoreSnapshot | null {
    if (this.#pinned >= MAX_SNAPSHOTS || !this.#db.open) return null;
    // Pinned readers kept the WAL from rewinding until it doubled its cap:
    // none until it has (its file is cut back to the cap then).
    if (this.#walBytes >= 2 * this.#walCapBytes) return null;
    // Throws as `sync()` would when the group's COMMIT fails.
    if (this.#groupOpen) this.#endGroup();
    else this.#writer.seal(false).catch(() => {});
    let reader: Reader | undefined;
    let layers: readonly GroupLayer[];
    try {
      reader = this.#idleReaders.pop() ?? this.#openReader();
      reader.begin.run();
      // A WAL read transaction takes its snapshot at its first read.
      const pinnedTs = BigInt(
        (reader.pin.get() as { value: string } | undefined)?.value ?? "0",
      );
      layers = this.#writer.layers.filter((layer) => layer.maxTs > pinnedTs);
    } catch {
      // No snapshot now (the caller goes on without one); the connection goes.
      if (reader !== undefined) {
        this.#readers.delete(reader);
        reader.db.close();
      }
      return null;
    }
    this.#pinned++;
    let pinned = true;
    const walAtPin = this.#walBytes;
    return {
      expired: () => this.#walBytes - walAtPin >= this.#walCapBytes,
      getDocument: (id) => {
        const pending = pendingDocument(layers, id);
        if (pending !== undefined) return pending;
        return (
          (reader.getDocument.get(id) as { json: string } | undefined)?.json ??
          null
        );
      },
      scanIndex: (indexId, interval, order, limit) =>
        mergeScan(
          layers,
          indexId,
          interval,
          order,
          limit,
          (rows) =>
            (order === "asc" ? reader.scanAsc : reader.scanDesc).all(
              indexId,
              interval.lo,
              interval.hi,
              rows,
            ) as IndexEntry[],
        ),
      release: () => {
        if (!pinned) return;
        pinned = false;
        this.#pinned--;
        if (!reader.db.open) return;
        reader.end.run();
        this.#idleReaders.push(reader);
      },
    };
  }

  #openReader(): Reader {
    const db = new Database(this.#db.name, { timeout: 200 });
    db.pragma("query_only = 1");
    const scan = (order: "ASC" | "DESC") =>
      db.prepare<[number, Buffer, Buffer, number]>(
        `SELECT key, doc_id AS docId FROM index_entries WHERE index_id = ? AND key >= ? AND key < ? ORDER BY key ${order} LIMIT ?`,
      );
    const reader: Reader = {
      db,
      begin: db.prepare("BEGIN"),
      pin: db.prepare("SELECT value FROM meta WHERE key = 'last_ts'"),
      end: db.prepare("COMMIT"),
      getDocument: db.prepare("SELECT json FROM documents WHERE id = ?"),
      scanAsc: scan("ASC"),
      scanDesc: scan("DESC"),
    };
    this.#readers.add(reader);
    return reader;
  }

  /** Registers an index outside a commit (a backfill about to start). */
  addIndex(index: StoredIndex): void {
    this.#quiesce();
    this.#rows.insertIndexRow(index);
  }

  /**
   * Writes a chunk of backfilled entries and, with them, the backfill's
   * cursor (the `by_id` key of the chunk's last document), so a restart
   * resumes after it.
   */
  insertEntries(
    indexId: number,
    entries: IndexEntry[],
    cursor: Buffer | undefined,
  ): void {
    backfillTransaction(this.#db, () => {
      for (const { key, docId } of entries)
        this.#rows.insertEntry(indexId, key, docId);
      if (cursor !== undefined)
        this.setMeta(backfillCursorKey(indexId), cursor.toString("hex"));
    });
  }

  /** Where a backfilling index's last chunk ended, if it wrote one. */
  backfillCursor(indexId: number): Buffer | undefined {
    const hex = this.getMeta(backfillCursorKey(indexId));
    return hex === null ? undefined : Buffer.from(hex, "hex");
  }

  getMeta(key: string): string | null {
    const row = this.#db
      .prepare("SELECT value FROM meta WHERE key = ?")
      .get(key) as { value: string } | undefined;
    return row?.value ?? null;
  }

  setMeta(key: string, value: string): void {
    this.#quiesce();
    this.#rows.setMeta(key, value);
  }

  /** A ready index needs no backfill cursor any more. */
  setIndexState(indexId: number, state: IndexState): void {
    this.#quiesce();
    this.#db.transaction(() => {
      this.#db
        .prepare("UPDATE indexes SET state = ? WHERE index_id = ?")
        .run(state, indexId);
      if (state === "ready") this.#deleteMeta(backfillCursorKey(indexId));
    })();
  }

  /** Forgets an index: its row (and cursor) at once, its entries `limit` at a time (returns how many went). */
  dropIndex(indexId: number): void {
    this.#quiesce();
    this.#db.transaction(() => {
      this.#db.prepare("DELETE FROM indexes WHERE index_id = ?").run(indexId);
      this.#deleteMeta(backfillCursorKey(indexId));
    })();
  }

  #deleteMeta(key: string): void {
    this.#db.prepare("DELETE FROM meta WHERE key = ?").run(key);
  }

  deleteEntries(indexId: number, limit: number): number {
    this.#quiesce();
    const deleted = this.#db
      .prepare(
        "DELETE FROM index_entries WHERE index_id = ? AND key IN (SELECT key FROM index_entries WHERE index_id = ? LIMIT ?)",
      )
      .run(indexId, indexId, limit).changes;
    if (!this.#db.inTransaction) this.#afterCommit();
    return deleted;
  }

  /** Ids of indexes whose entries are still there but whose row is gone (a drop cut short by a restart). */
  orphanedIndexIds(): number[] {
    return (
      this.#db
        .prepare(
          "SELECT DISTINCT index_id AS id FROM index_entries WHERE index_id NOT IN (SELECT index_id FROM indexes)",
        )
        .all() as { id: number }[]
    ).map((r) => r.id);
  }

  /** The open connection, for indexes kept in tables of the same file (searchIndex.ts). */
  get connection(): Database.Database {
    return this.#db;
  }

  /**
   * Adds a commit to the open group. A group goes to the group writer's
   * thread (groupWriter.ts), unless one of its commits keeps a search or
   * vector index (`inTransaction`: that upkeep reads its own tables inside
   * the transaction): from that commit on, until the group ends, commits are
   * savepoints in a transaction of the store's own connection, begun once the
   * writer has written everything before (`quiesce`), so that a commit that
   * fails there leaves the others of its group as they were. Throws
   * `CommitGroupLostError` when SQLite had to roll a whole group back (a full
   * disk or an I/O error ends the transaction), or the writer's thread did.
   *
   * `progress.step` records how far it got, so that a commit a function's
   * watchdog cut short (V8 ends host code at any call, and runs no `catch` or
   * `finally`) can be undone or finished (`recoverCut`); each step is set
   * just before the statement it names, or just after the work it follows.
   */
  commit(batch: CommitBatch, progress: CommitProgress = { step: 0 }): void {
    const failure = this.#writer.failure;
    if (failure !== null) throw new CommitGroupLostError(failure);
    if (!this.#groupOpen && batch.inTransaction === undefined) {
      progress.viaWriter = true;
      progress.step = 1;
      this.#writer.add(batch);
      progress.step = 4;
      this.#noteRequest(batch);
      progress.step = 5;
      return;
    }
    if (!this.#groupOpen) {
      this.#quiesce();
      this.#db.exec("BEGIN IMMEDIATE");
      this.#groupOpen = true;
    }
    progress.step = 1;
    this.#savepoint.run();
    progress.step = 2;
    try {
      this.#rows.write(batch);
      batch.inTransaction?.();
    } catch (error) {
      if (!this.#db.inTransaction) {
        this.#groupOpen = false;
        this.#groupState = null;
        throw new CommitGroupLostError(error as Error);
      }
      this.#rollbackToSavepoint.run();
      this.#releaseSavepoint.run();
      throw error;
    }
    progress.step = 3;
    this.#releaseSavepoint.run();
    progress.step = 4;
    this.#recordGroupState(batch);
    progress.step = 5;
  }

  /**
   * A commit that a watchdog cut short (`commit`'s `progress`) is undone,
   * its savepoint rolled back, if it was not yet released into its group;
   * otherwise what `commit` records after the release is recorded. Returns
   * whether the commit stays in the group. The group itself is open exactly
   * when SQLite says so (a cut may fall between BEGIN and its flag).
   */
  recoverCut(batch: CommitBatch, progress: CommitProgress): boolean {
    if (progress.viaWriter === true) {
      // Adding is idempotent: what the cut left half done is done again.
      if (progress.step === 0) return false;
      this.#writer.add(batch);
      this.#noteRequest(batch);
      return true;
    }
    this.#groupOpen = this.#db.inTransaction;
    switch (progress.step) {
      case 0:
        return false;
      case 1:
      case 2:
        this.#undoSavepoint();
        return false;
      case 3:
        // Cut at the release: the savepoint is still there, or it is gone.
        if (this.#undoSavepoint()) return false;
        this.#recordGroupState(batch);
        return true;
      case 4:
        this.#recordGroupState(batch);
        return true;
      default:
        return true;
    }
  }

  /** Rolls the commit's savepoint back and removes it; false when it is not open. */
  #undoSavepoint(): boolean {
    if (!this.#db.inTransaction) return false;
    try {
      this.#rollbackToSavepoint.run();
    } catch {
      // "no such savepoint": never opened, already released or rolled back.
      return false;
    }
    this.#releaseSavepoint.run();
    return true;
  }

  /** A commit's de-duplication record raises its session's highest request id (idempotent). */
  #noteRequest(batch: CommitBatch): void {
    if (batch.sessionRequest !== undefined) {
      const { sessionId, requestId } = batch.sessionRequest;
      const latest = this.#latestRequestIds.get(sessionId);
      if (latest !== undefined && requestId > latest)
        this.#latestRequestIds.set(sessionId, requestId);
    }
  }

  /** What a released commit leaves for its group's COMMIT (idempotent: `recoverCut` may repeat it). */
  #recordGroupState(batch: CommitBatch): void {
    this.#noteRequest(batch);
    const group = this.#groupState;
    if (group === null) {
      this.#groupState = {
        ts: batch.ts,
        lastCreationTime: batch.lastCreationTime,
        counts: new Map(batch.counts),
      };
    } else {
      group.ts = batch.ts;
      group.lastCreationTime = batch.lastCreationTime;
      for (const [number, count] of batch.counts)
        group.counts.set(number, count);
    }
  }

  /** The stored outcome and commit timestamp of a mutation already run for this client request. */
  findSessionRequest(
    sessionId: string,
    requestId: number,
  ): { outcome: string; ts: bigint } | null {
    let latest = this.#latestRequestIds.get(sessionId);
    if (latest === undefined) {
      const stored = this.#latestSessionRequest.get(sessionId) as number | null;
      // The groups on their way to the file count too: the cache must stay
      // an upper bound once they are written.
      latest = Math.max(
        stored ?? -1,
        pendingLatestRequestId(this.#writer.layers, sessionId),
      );
      if (this.#latestRequestIds.size >= LATEST_REQUEST_IDS_CACHED)
        this.#latestRequestIds.clear();
      this.#latestRequestIds.set(sessionId, latest);
    }
    if (requestId > latest) return null;
    const pending = pendingSessionRequest(
      this.#writer.layers,
      sessionId,
      requestId,
    );
    if (pending !== undefined) return pending;
    const row = this.#findSessionRequest.get(sessionId, requestId) as
      { outcome: string; ts: bigint } | undefined;
    return row ?? null;
  }

  /**
   * Makes every commit that returned before this call durable: one fdatasync
   * of the `-wal` file, off the event loop (on the group writer's thread,
   * after it has written the open group, or for a group of the store's own
   * connection, on the thread pool after its COMMIT).
   */
  async sync(): Promise<void> {
    // `close` checkpointed and synced everything; the descriptor may be gone.
    if (!this.#db.open) return;
    if (!this.#groupOpen) return this.#writer.seal(true);
    this.#endGroup();
    this.#syncsInFlight++;
    await new Promise<void>((resolve, reject) => {
      fs.fdatasync(this.#walFd, (error) => {
        this.#syncsInFlight--;
        if (!this.#db.open && this.#syncsInFlight === 0)
          fs.closeSync(this.#walFd);
        if (error === null) resolve();
        else reject(error);
      });
    });
  }

  /**
   * A `sync()` on the group writer's thread has returned, and its promise
   * settles at the event loop's next poll (`GroupWriter.syncLanded`). False
   * for an fsync of the store's own connection's group.
   */
  get syncLanded(): boolean {
    return this.#writer.syncLanded;
  }

  /** `sync()` on the calling thread, for the last commits before a close. */
  syncNow(): void {
    if (!this.#groupOpen) {
      try {
        this.#writer.syncNow();
      } catch (error) {
        throw new CommitGroupLostError(error as Error);
      }
      return;
    }
    this.#endGroup();
    fs.fdatasyncSync(this.#walFd);
  }

  /**
   * Blocks until the group writer's thread has written every commit made so
   * far (it posts the open group): before anything else writes with the
   * store's own connection.
   */
  #quiesce(): void {
    if (this.#groupOpen) return;
    try {
      this.#writer.quiesce();
    } catch (error) {
      throw new CommitGroupLostError(error as Error);
    }
  }

  /** Writes what the open group's commits leave in the table counts and clocks (and prunes expired session requests). */
  #writeGroupState(): void {
    const group = this.#groupState;
    if (group === null) return;
    this.#groupState = null;
    this.#rows.writeGroupState(group);
  }

  /**
   * COMMITs the open group: its frames go to the `-wal` file, not yet
   * fsynced, and the worker is asked to copy them into the database file.
   * Past the WAL cap, this connection checkpoints what the worker left, so
   * that the next BEGIN rewinds the WAL (busy while a checkpoint of the
   * worker runs: the worker then starts no other, and the next COMMIT, which
   * grows the file again, retries).
   */
  #endGroup(): void {
    if (!this.#groupOpen) return;
    this.#writeGroupState();
    this.#groupOpen = false;
    this.#db.exec("COMMIT");
    this.#afterCommit();
  }

  /**
   * After a transaction committed: the WAL's upkeep (module comment,
   * "Checkpoints"). For a group of the writer's thread, `walBytes` is the
   * size it found after its COMMIT and `writerCheckpointed` whether it
   * checkpointed there at the cap; otherwise this connection does.
   */
  #afterCommit(
    walBytes = fs.fstatSync(this.#walFd).size,
    writerCheckpointed: boolean | null = null,
  ): void {
    const grown = walBytes > this.#walBytes;
    this.#walBytes = walBytes;
    if (
      writerCheckpointed === true ||
      (writerCheckpointed === null && grown && walBytes >= this.#walCapBytes)
    ) {
      // Until the WAL has rewound the worker starts no checkpoint: under a
      // busy disk it could hold the lock at every COMMIT, and one running at
      // the next BEGIN keeps the WAL from rewinding there.
      // The flag first: a watchdog cut between the two (this runs inside a
      // window after a group's COMMIT) then leaves the worker free rather
      // than held with nothing to release it.
      this.#holding = true;
      this.#checkpointer.hold(true);
      if (writerCheckpointed === null) {
        this.#capCheckpoints++;
        this.#db.pragma("wal_checkpoint(PASSIVE)");
      } else {
        this.#writerCapCheckpoints++;
      }
    } else if (this.#holding && !grown) {
      this.#checkpointer.hold(false);
      this.#holding = false;
    }
    this.#requestAtCommit = this.#checkpointer.request();
  }

  /**
   * The worker's checkpoints so far, this connection's at the cap (on the
   * event loop) and the group writer thread's (tests and benchmarks).
   */
  get checkpointStats(): CheckpointStats & {
    capCheckpoints: number;
    writerCapCheckpoints: number;
  } {
    return {
      ...this.#checkpointer.stats,
      capCheckpoints: this.#capCheckpoints,
      writerCapCheckpoints: this.#writerCapCheckpoints,
    };
  }

  /**
   * For background writes (a backfill), before their next transaction:
   * resolves once the WAL has room for it. A backfill writes faster than the
   * worker copies, so the file would reach the cap, where a COMMIT checkpoints
   * on the event loop (40 to 100 ms at 64 MiB, measured at 1M documents).
   * Room: the file is under half the cap (a chunk writes a few MB at most),
   * or the worker has copied every frame in a checkpoint that began after
   * the last commit, so the next transaction rewinds the WAL to its start.
   * The worker is asked to start that checkpoint at once (the writer waits
   * for one checkpoint of what it just wrote, a few ms, rather than two at
   * the worker's pace). Never waits while the worker is held or gone, and
   * at most ROOM_WAIT_MAX_MS.
   */
  async roomInWal(): Promise<void> {
    const deadline = performance.now() + ROOM_WAIT_MAX_MS;
    const room = () => {
      if (this.#holding || !this.#checkpointer.alive) return true;
      if (this.#walBytes < this.#walCapBytes / 2) return true;
      const stats = this.#checkpointer.stats;
      return (
        stats.served >= this.#requestAtCommit &&
        stats.backfilled === stats.walFrames
      );
    };
    let asked = false;
    for (;;) {
      if (room()) return;
      const left = deadline - performance.now();
      if (left <= 0) return;
      // At once rather than at the worker's pace: the writer waits for it.
      if (!asked) this.#requestAtCommit = this.#checkpointer.request(true);
      asked = true;
      await this.#checkpointer.nextCheckpoint(left);
    }
  }

  /**
   * Closes the worker's connection, then this one, which (the last to close)
   * checkpoints the WAL and deletes it, then the lock file.
   */
  close(): void {
    if (!this.#db.open) return;
    if (this.#groupOpen && this.#db.inTransaction) {
      this.#writeGroupState();
      this.#db.exec("COMMIT");
    }
    this.#groupOpen = false;
    // Before this connection, which (the last to close) checkpoints and deletes the WAL.
    this.#writer.close();
    for (const reader of this.#readers) reader.db.close();
    this.#checkpointer.close();
    this.#db.close();
    this.#lock.close();
    // A sync still running closes the descriptor when it is done.
    if (this.#syncsInFlight === 0) fs.closeSync(this.#walFd);
  }
}

/**
 * A transaction of backfill work, committed without an fsync of its own (as
 * every commit under group commit): losing it to a power cut only moves the
 * resume point back to an earlier cursor (its entries and cursor commit
 * together), and the next group's fsync makes it
 * durable with everything before it, since WAL frames are written in order
 * (SQLite `synchronous = NORMAL` in WAL mode: "consistent", only the most
 * recent transactions may roll back, https://sqlite.org/pragma.html#pragma_synchronous).
 * Saves one fsync per chunk, most of a backfill's cost. Committed on its own
 * (outside a group), it asks for a checkpoint as a group's COMMIT does.
 */
export function backfillTransaction(
  db: Database.Database,
  work: () => void,
): void {
  quiesceWriter(db);
  db.transaction(work)();
  // Inside an open group it was a savepoint; the group's COMMIT does the rest.
  if (!db.inTransaction) afterBackfill.get(db)?.();
}

/** The WAL upkeep of each open store's connection, for `backfillTransaction`. */
const afterBackfill = new WeakMap<Database.Database, () => void>();

/** Each open store's `#quiesce`, for writes through its connection (`quiesceWriter`). */
const beforeWrite = new WeakMap<Database.Database, () => void>();

/**
 * Call before writing with a store's connection from outside the store (the
 * search and vector indexes' own tables, derivedIndexes.ts): blocks until the
 * group writer's thread has written every commit, so that the two connections
 * never write at once.
 */
export function quiesceWriter(db: Database.Database): void {
  beforeWrite.get(db)?.();
}

function backfillCursorKey(indexId: number): string {
  return `backfill_cursor:${indexId}`;
}

/** SQLite rolled back a whole group: commits already applied in memory are gone from the file. */
export class CommitGroupLostError extends Error {
  constructor(cause: Error) {
    super(`SQLite rolled back a group of commits: ${cause.message}`);
    this.name = "CommitGroupLostError";
  }
}

export class DataDirectoryLockedError extends Error {
  constructor(file: string) {
    super(
      `The data file ${file} is in use by another backend process; stop it or pass a different --data directory`,
    );
    this.name = "DataDirectoryLockedError";
  }
}

/**
 * Takes the data file's lock: `<file>.lock`, an empty SQLite database held
 * with an exclusive lock (`locking_mode = EXCLUSIVE` keeps the lock of the
 * first transaction until the connection closes). Taken at open rather than
 * at the first commit, so a second backend on the same directory fails at
 * start-up, not mid-request.
 */
function lockDataFile(file: string): Database.Database {
  const lock = new Database(`${file}.lock`, { timeout: 200 });
  try {
    lock.pragma("locking_mode = EXCLUSIVE");
    lock.exec("BEGIN EXCLUSIVE; COMMIT;");
  } catch (error) {
    lock.close();
    if ((error as { code?: string }).code === "SQLITE_BUSY") {
      throw new DataDirectoryLockedError(file);
    }
    throw error;
  }
  return lock;
}

/** Makes a new file's directory entry durable (fsync(2): the file's own fsync does not). */
function fsyncDirectory(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** System tables have fixed numbers below the user range (convex-backend reserves 1..10000). */
export const SYSTEM_TABLES: Record<string, number> = {
  _scheduled_functions: 1,
  _storage: 2,
  _cron_jobs: 3,
};

export const BY_ID = "by_id";
export const BY_CREATION_TIME = "by_creation_time";

/** The built-in indexes every table has, with their full key fields. */
export function builtInIndexes(): { name: string; keyFields: string[] }[] {
  return [
    { name: BY_ID, keyFields: ["_id"] },
    {
      name: BY_CREATION_TIME,
      keyFields: indexedFieldsWithSuffix(["_creationTime"]),
    },
  ];
}

function migrate(db: Database.Database): void {
  const hasMeta =
    db
      .prepare(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
      )
      .get() !== undefined;
  const version = hasMeta
    ? (
        db
          .prepare("SELECT value FROM meta WHERE key = 'schema_version'")
          .get() as { value: string } | undefined
      )?.value
    : undefined;
  if (version === SCHEMA_VERSION) {
    // Files of this version written before the index existed get it once.
    db.exec(SESSION_REQUESTS_BY_TS);
    return;
  }
  if (version === "1") {
    db.transaction(() => migrateFromV1(db))();
    return;
  }
  if (version !== undefined) {
    throw new Error(
      `The data directory was written by an incompatible backend (storage version ${version}, expected ${SCHEMA_VERSION}); move it aside or pass a different --data directory`,
    );
  }
  db.transaction(() => {
    createTables(db);
    db.prepare(
      "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
    ).run(SCHEMA_VERSION);
  })();
}

function createTables(db: Database.Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS meta (
      key TEXT PRIMARY KEY,
      value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS tables (
      name TEXT PRIMARY KEY,
      number INTEGER NOT NULL UNIQUE,
      count INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS documents (
      id TEXT PRIMARY KEY,
      table_number INTEGER NOT NULL,
      ts INTEGER NOT NULL,
      json TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS indexes (
      index_id INTEGER PRIMARY KEY,
      table_number INTEGER NOT NULL,
      name TEXT NOT NULL,
      fields TEXT NOT NULL,
      state TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS index_entries (
      index_id INTEGER NOT NULL,
      key BLOB NOT NULL,
      doc_id TEXT NOT NULL,
      PRIMARY KEY (index_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS session_requests (
      session_id TEXT NOT NULL,
      request_id INTEGER NOT NULL,
      ts INTEGER NOT NULL,
      outcome TEXT NOT NULL,
      PRIMARY KEY (session_id, request_id)
    ) WITHOUT ROWID;
    ${SESSION_REQUESTS_BY_TS}
  `);
}

/** Expired session requests are found by it (`SESSION_REQUEST_PRUNE_BATCH`). */
const SESSION_REQUESTS_BY_TS =
  "CREATE INDEX IF NOT EXISTS session_requests_by_ts ON session_requests (ts);";

/**
 * Version 1 kept documents only. Builds the built-in indexes of every table,
 * the table counts and the `_creationTime` clock, in one transaction (schema
 * indexes are backfilled when the app's schema is installed). This is the only
 * per-document work at an open, and it happens once.
 */
function migrateFromV1(db: Database.Database): void {
  db.exec("ALTER TABLE tables ADD COLUMN count INTEGER NOT NULL DEFAULT 0");
  createTables(db);
  // Version 1 never wrote rows for system tables, yet stored their documents.
  const insertSystemTable = db.prepare(
    "INSERT OR IGNORE INTO tables (name, number, count) VALUES (?, ?, 0)",
  );
  for (const [name, number] of Object.entries(SYSTEM_TABLES)) {
    insertSystemTable.run(name, number);
  }
  const tables = db.prepare("SELECT number FROM tables").all() as {
    number: number;
  }[];
  const insertIndex = db.prepare(
    "INSERT INTO indexes (index_id, table_number, name, fields, state) VALUES (?, ?, ?, ?, 'ready')",
  );
  const insertEntry = db.prepare(
    "INSERT INTO index_entries (index_id, key, doc_id) VALUES (?, ?, ?)",
  );
  const setCount = db.prepare("UPDATE tables SET count = ? WHERE number = ?");
  // Pages by id rather than one .iterate(): the connection cannot write while
  // a statement iterates, and a page bounds the memory used.
  const page = db.prepare(
    "SELECT id, table_number AS tableNumber, json FROM documents WHERE id > ? ORDER BY id LIMIT 2000",
  );
  let nextIndexId = 1;
  let lastCreationTime = 0;
  const indexesOf = new Map<
    number,
    { indexId: number; keyFields: string[] }[]
  >();
  const counts = new Map<number, number>();
  for (const { number } of tables) {
    const indexes = builtInIndexes().map((index) => ({
      ...index,
      indexId: nextIndexId++,
    }));
    for (const index of indexes) {
      insertIndex.run(
        index.indexId,
        number,
        index.name,
        JSON.stringify(index.keyFields),
      );
    }
    indexesOf.set(number, indexes);
    counts.set(number, 0);
  }
  let after = "";
  for (;;) {
    const rows = page.all(after) as {
      id: string;
      tableNumber: number;
      json: string;
    }[];
    if (rows.length === 0) break;
    for (const { id, tableNumber, json } of rows) {
      const indexes = indexesOf.get(tableNumber);
      if (indexes === undefined) {
        throw new Error(
          `Document ${id} names unknown table number ${tableNumber}`,
        );
      }
      const doc = jsonToConvex(JSON.parse(json) as JSONValue) as Record<
        string,
        Value
      >;
      lastCreationTime = Math.max(
        lastCreationTime,
        doc._creationTime as number,
      );
      for (const index of indexes) {
        insertEntry.run(
          index.indexId,
          encodeKey(indexKey(doc, index.keyFields)),
          id,
        );
      }
      counts.set(tableNumber, counts.get(tableNumber)! + 1);
    }
    after = rows[rows.length - 1].id;
  }
  for (const [number, count] of counts) setCount.run(count, number);
  db.prepare(
    "INSERT INTO meta (key, value) VALUES ('last_creation_time', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
  ).run(String(lastCreationTime));
  db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(
    SCHEMA_VERSION,
  );
}
