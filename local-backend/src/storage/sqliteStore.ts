/**
 * Durable storage for the embedded backend: one SQLite file per data directory.
 *
 * The in-memory tables (`storage/tables.ts`) are the source of truth while the
 * process runs; this store is written through on every commit and read once at
 * start-up. A commit is one SQLite transaction holding the changed documents,
 * the new commit timestamp and the mutation's de-duplication record, so either
 * all of it survives a crash or none of it does.
 *
 * Durability: WAL with `synchronous = FULL`, so a commit is fsynced before
 * `commit()` returns, and the backend acknowledges a mutation only after that.
 * (better-sqlite3 compiles WAL with `synchronous = NORMAL` as its default, which
 * survives a process crash but may lose the last commits on power loss; see its
 * docs/performance.md.) `locking_mode = EXCLUSIVE` keeps a second backend process
 * from opening the same data directory and diverging from our in-memory copy.
 *
 * Usage:
 *   const store = SqliteStore.open(path.join(dataDir, "db.sqlite3"));
 *   const snapshot = store.load();
 *   store.commit({ ts, newTables, writes, sessionRequest });
 */
import Database from "better-sqlite3";

const SCHEMA_VERSION = "1";

/** Session requests older than this are forgotten at start-up. A client that
 *  reconnects resends only mutations it has not seen confirmed, so a week is far
 *  longer than any retry window (the real backend keeps `_session_requests` for a
 *  bounded time too). */
const SESSION_REQUEST_RETENTION_NS = 7n * 24n * 3600n * 1_000_000_000n;

export type StoredTable = { name: string; number: number };

export type StoredDocument = {
  id: string;
  tableNumber: number;
  /** The document as Convex JSON (`convexToJson`), system fields included. */
  json: string;
};

export type DocumentWrite =
  | { id: string; tableNumber: number; json: string }
  | { id: string; tableNumber: number; json: null };

export type SessionRequestRecord = {
  sessionId: string;
  requestId: number;
  /** JSON of the mutation's outcome, replayed verbatim on a retry. */
  outcome: string;
};

export type CommitBatch = {
  ts: bigint;
  newTables: StoredTable[];
  writes: DocumentWrite[];
  sessionRequest?: SessionRequestRecord | undefined;
  /** Runs last inside the commit's SQLite transaction (search index upkeep). */
  inTransaction?: (() => void) | undefined;
};

export type LoadedState = {
  lastTs: bigint;
  tables: StoredTable[];
  documents: Iterable<StoredDocument>;
};

export class SqliteStore {
  readonly #db: Database.Database;
  readonly #commit: (batch: CommitBatch) => void;
  readonly #findSessionRequest: Database.Statement<[string, number]>;

  private constructor(db: Database.Database) {
    this.#db = db;
    const setMeta = db.prepare<[string, string]>(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    );
    const insertTable = db.prepare<[string, number]>(
      "INSERT INTO tables (name, number) VALUES (?, ?)",
    );
    const upsertDocument = db.prepare<[string, number, bigint, string]>(
      "INSERT INTO documents (id, table_number, ts, json) VALUES (?, ?, ?, ?) " +
        "ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, json = excluded.json",
    );
    const deleteDocument = db.prepare<[string]>(
      "DELETE FROM documents WHERE id = ?",
    );
    const insertSessionRequest = db.prepare<[string, number, bigint, string]>(
      "INSERT OR REPLACE INTO session_requests (session_id, request_id, ts, outcome) VALUES (?, ?, ?, ?)",
    );
    this.#findSessionRequest = db
      .prepare<[string, number]>(
        "SELECT outcome, ts FROM session_requests WHERE session_id = ? AND request_id = ?",
      )
      .safeIntegers(true);
    this.#commit = db.transaction((batch: CommitBatch) => {
      for (const table of batch.newTables) {
        insertTable.run(table.name, table.number);
      }
      for (const write of batch.writes) {
        if (write.json === null) {
          deleteDocument.run(write.id);
        } else {
          upsertDocument.run(write.id, write.tableNumber, batch.ts, write.json);
        }
      }
      if (batch.sessionRequest !== undefined) {
        const { sessionId, requestId, outcome } = batch.sessionRequest;
        insertSessionRequest.run(sessionId, requestId, batch.ts, outcome);
      }
      setMeta.run("last_ts", batch.ts.toString());
      batch.inTransaction?.();
    });
  }

  /**
   * Opens (creating if needed) the database file and takes an exclusive lock on it.
   * Throws `DataDirectoryLockedError` when another process holds it.
   */
  static open(file: string): SqliteStore {
    const db = new Database(file, { timeout: 200 });
    try {
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = FULL");
      db.pragma("locking_mode = EXCLUSIVE");
      // Take the exclusive lock now rather than at the first commit, so a second
      // backend on the same directory fails at start-up, not mid-request.
      db.exec("BEGIN IMMEDIATE; COMMIT;");
    } catch (error) {
      db.close();
      if ((error as { code?: string }).code === "SQLITE_BUSY") {
        throw new DataDirectoryLockedError(file);
      }
      throw error;
    }
    migrate(db);
    return new SqliteStore(db);
  }

  load(): LoadedState {
    const lastTsRow = this.#db
      .prepare("SELECT value FROM meta WHERE key = 'last_ts'")
      .get() as { value: string } | undefined;
    const lastTs = lastTsRow === undefined ? 0n : BigInt(lastTsRow.value);
    this.#db
      .prepare("DELETE FROM session_requests WHERE ts < ?")
      .run(lastTs - SESSION_REQUEST_RETENTION_NS);
    const tables = this.#db
      .prepare("SELECT name, number FROM tables ORDER BY number")
      .all() as StoredTable[];
    const documents = this.#db
      .prepare("SELECT id, table_number AS tableNumber, json FROM documents")
      .iterate() as IterableIterator<StoredDocument>;
    return { lastTs, tables, documents };
  }

  /** The open connection, for indexes kept in tables of the same file (searchIndex.ts). */
  get connection(): Database.Database {
    return this.#db;
  }

  commit(batch: CommitBatch): void {
    this.#commit(batch);
  }

  /** The stored outcome and commit timestamp of a mutation already run for this client request. */
  findSessionRequest(
    sessionId: string,
    requestId: number,
  ): { outcome: string; ts: bigint } | null {
    const row = this.#findSessionRequest.get(sessionId, requestId) as
      { outcome: string; ts: bigint } | undefined;
    return row ?? null;
  }

  close(): void {
    if (this.#db.open) {
      this.#db.close();
    }
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

function migrate(db: Database.Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS meta (
      key TEXT PRIMARY KEY,
      value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS tables (
      name TEXT PRIMARY KEY,
      number INTEGER NOT NULL UNIQUE
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS documents (
      id TEXT PRIMARY KEY,
      table_number INTEGER NOT NULL,
      ts INTEGER NOT NULL,
      json TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS session_requests (
      session_id TEXT NOT NULL,
      request_id INTEGER NOT NULL,
      ts INTEGER NOT NULL,
      outcome TEXT NOT NULL,
      PRIMARY KEY (session_id, request_id)
    ) WITHOUT ROWID;
  `);
  const version = db
    .prepare("SELECT value FROM meta WHERE key = 'schema_version'")
    .get() as { value: string } | undefined;
  if (version === undefined) {
    db.prepare(
      "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
    ).run(SCHEMA_VERSION);
  } else if (version.value !== SCHEMA_VERSION) {
    throw new Error(
      `The data directory was written by an incompatible backend (storage version ${version.value}, expected ${SCHEMA_VERSION}); move it aside or pass a different --data directory`,
    );
  }
}
