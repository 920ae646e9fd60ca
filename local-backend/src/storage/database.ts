/**
 * The database: documents and index entries in SQLite (sqliteStore.ts), a
 * bounded cache of decoded documents, the table and index registry, the schema,
 * and the clocks for commit timestamps and `_creationTime`.
 *
 * Memory and start-up do not grow with the data: opening reads the registry
 * and two clocks, never the documents; queries read index ranges from SQLite in
 * pages (`scan`); a schema whose indexes did not change costs nothing to
 * install, and a new or changed index (search and vector ones too) is
 * backfilled in chunks that yield to the event loop (`prepareSchema`) before
 * the schema that uses it is installed, as a Convex push waits for its indexes
 * to backfill. Each chunk commits with the backfill's cursor, so a backfill cut
 * short by a restart resumes after its last chunk.
 *
 * `commit()` is the only place committed state changes. It runs synchronously:
 * SQLite first (a savepoint in its group's transaction, not yet fsynced), then
 * the cache and the clocks, then the commit listeners that drive subscription
 * invalidation. An index whose key a write leaves unchanged is not touched.
 * A commit may run under a function's watchdog (a shared window, deadline.ts),
 * which can end host code at any call: `recoverCut` then rolls its savepoint
 * back or finishes its in-memory part, and the listeners and the fsync of
 * such commits wait until the window is over (`holdAnnouncements`).
 *
 * Durability (group commit). A commit is on disk only once `durable(ts)`
 * resolves. One fsync runs at a time (`SqliteStore.sync`, off the event loop);
 * it covers every commit made before it was issued, and the commits made while
 * it runs share the next one. A lone writer waits for one fsync, as with an
 * fsync per commit; writers that arrive together share one between them.
 *
 * Nothing is shown to anyone before it is durable. Convex's committer
 * publishes a commit to readers only once its persistence write finished
 * (convex-backend `crates/database/src/committer.rs`, `publish_commit`); here
 * mutations and queries do run over commits that are not yet durable (they
 * are serialized after them either way), and what they produce waits instead,
 * until `durable(ts)` of the latest commit it may reflect: the runner resolves
 * mutations, one-shot queries and system commits only then, and sync sessions
 * send a MutationResponse or a Transition only once its ts is durable. A
 * mutation that read an undurable write commits after it, so its own
 * acknowledgement implies both. Commits waiting for durability are bounded
 * (MAX_UNDURABLE_COMMITS, MAX_UNDURABLE_BYTES): past that, `backlogFull`
 * tells the committer to wait for `durable` before committing again. A failed
 * fsync stops all commits, as Convex's committer shuts down on a failed write
 * ("Unsure if transaction committed to disk").
 *
 * Usage:
 *   const db = Database.open(dataDir);
 *   await db.prepareSchema(schemaJson);       // backfills, outside the executor
 *   db.setSchema(schemaJson);                 // cheap once prepared
 *   const { ts } = db.commit(tx.pendingWrites(), sessionRequest);
 *   await db.durable(ts);                     // now it may be acknowledged
 */
import fs from "node:fs";
import path from "node:path";
import { convexToJson, type JSONValue, jsonToConvex } from "convex/values";
import type { ValidatorJSON } from "convex/values";
import { decodeId, FIRST_USER_TABLE_NUMBER } from "../values/ids.ts";
import { type Doc, resolveCommitTs } from "../values/wire.ts";
import { validateValue } from "../values/validators.ts";
import { indexedFieldsWithSuffix, indexKey } from "../query/indexRange.ts";
import {
  afterCursor,
  compareKeyBytes,
  encodeKey,
  FULL_RANGE,
  type KeyInterval,
  type Order,
  rangeToInterval,
} from "../query/keys.ts";
import type { DocumentChange } from "../query/readSet.ts";
import type { SearchIndexDefinition } from "../query/textSearch.ts";
import { type BackfillProgress, Slice } from "./derivedIndexes.ts";
import { SearchIndexes } from "./searchIndex.ts";
import { type VectorIndexDefinition, VectorIndexes } from "./vectorIndex.ts";
import {
  BY_CREATION_TIME,
  BY_ID,
  builtInIndexes,
  type CommitBatch,
  CommitGroupLostError,
  type CommitProgress,
  type DocumentWrite,
  type IndexWrite,
  type SessionRequestRecord,
  SqliteStore,
  type IndexEntry,
  type StoredIndex,
  type StoreSnapshot,
  SYSTEM_TABLES,
  type StoredTable,
} from "./sqliteStore.ts";

export { BY_CREATION_TIME, BY_ID } from "./sqliteStore.ts";

/** What `schema.export()` of convex/server returns (convex 1.48 `SchemaDefinition.export`). */
export type SchemaJson = {
  tables: {
    tableName: string;
    indexes: { indexDescriptor: string; fields: string[] }[];
    stagedDbIndexes?: { indexDescriptor: string; fields: string[] }[];
    searchIndexes?: SearchIndexJson[];
    stagedSearchIndexes?: SearchIndexJson[];
    vectorIndexes?: VectorIndexJson[];
    stagedVectorIndexes?: VectorIndexJson[];
    documentType: ValidatorJSON;
  }[];
  schemaValidation: boolean;
};

type SearchIndexJson = {
  indexDescriptor: string;
  searchField: string;
  filterFields: string[];
};
type VectorIndexJson = {
  indexDescriptor: string;
  vectorField: string;
  dimensions: number;
  filterFields: string[];
};

/**
 * How an index name resolves: Convex serves only enabled indexes; "staged"
 * (declared staged, or installed and still backfilling) answers "currently
 * backfilling".
 */
export type IndexLookup<T> =
  { state: "enabled"; index: T } | { state: "staged" } | { state: "missing" };

/**
 * System tables' own indexes, beside the built-in two. The scheduler finds the
 * next due job by `state.kind, scheduledTime` (convex-backend
 * `model/scheduled_jobs/mod.rs` indexes `_scheduled_jobs` by `nextTs` for the same
 * purpose), and garbage-collects finished jobs by `completedTime`.
 */
export const SYSTEM_INDEXES: Record<
  string,
  SchemaJson["tables"][number]["indexes"]
> = {
  _scheduled_functions: [
    {
      indexDescriptor: "by_state_scheduledTime",
      fields: ["state.kind", "scheduledTime"],
    },
    { indexDescriptor: "by_completedTime", fields: ["completedTime"] },
  ],
};

const ID_CACHE_SIZE = 100_000;
const MAX_CLOCK_ADVANCE_MS = 60 * 60 * 1000;
/** Decoded documents kept in memory; a bound on count and on JSON size. */
const DOC_CACHE_MAX_DOCS = 20_000;
/**
 * Rows of one scan that go into the document cache; the rest are read
 * through it (used when there, not added), so one scan of a big table does
 * not push out every other query's documents, and a scan longer than the
 * cache does not evict its own rows before it reads them again.
 */
const SCAN_CACHED_ROWS = DOC_CACHE_MAX_DOCS / 4;
const DOC_CACHE_MAX_BYTES = 32 << 20;
/** Rows per SQLite read of a scan: small first (most queries take a few), then larger. */
const FIRST_PAGE_ROWS = 32;
const MAX_PAGE_ROWS = 1024;
/** Index entries deleted per step of a drop. */
const DROP_ROWS = 500;
/** A backfill step (one SQLite transaction) ends after this many documents or
 *  this long, whichever comes first; slices are timed in `Slice`. */
const BACKFILL_CHUNK_ROWS = 200;
const BACKFILL_STEP_MS = 5;
/** Commits (and their documents' JSON bytes) that may wait for one fsync; past
 *  either, the committer waits, so a slow disk bounds memory and group size. */
const MAX_UNDURABLE_COMMITS = 512;
const MAX_UNDURABLE_BYTES = 16 << 20;

/** A document's new value (null: deleted); `inserted` when no committed
 *  version can exist (a fresh id from `insert`), which saves a lookup. */
export type PendingWrite = {
  table: string;
  doc: Doc | null;
  inserted?: boolean;
};

export type CommitResult = {
  ts: bigint;
  /** The commit's number in this process (`commitCount` once it is made). */
  commit: number;
  tables: Set<string>;
  /** Each written document before and after, for precise invalidation. */
  changes: DocumentChange[];
};

export type CommitListener = (result: CommitResult) => void;

/** A commit between `#prepareCommit` and the end of `#apply` (`recoverCut`). */
type PreparedCommit = {
  batch: CommitBatch;
  progress: CommitProgress;
  result: CommitResult;
  jsonById: Map<string, string>;
  /** The length of the JSON it writes: what it adds to the fsync backlog. */
  bytes: number;
  /** Added to the fsync backlog (`#apply`). */
  counted: boolean;
};

/**
 * Wraps each group's fsync: `sync` performs it (covering every commit made
 * before it is called); `backlog` counts the commits waiting for durability.
 * Tests hold a group open with it and record what waits for it.
 */
export type SyncHook = (
  sync: () => Promise<void>,
  backlog: () => number,
) => Promise<void>;

export type DatabaseOptions = {
  syncHook?: SyncHook | undefined;
  /** The WAL's cap (sqliteStore.ts WAL_CAP_BYTES), smaller in tests. */
  walCapBytes?: number | undefined;
};

type DurableWaiter = {
  ts: bigint;
  resolve: () => void;
  reject: (error: Error) => void;
};

export class SchemaViolationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SchemaViolationError";
  }
}

/** An index as stored: `ready` ones serve queries, all of them are kept up to date by commits. */
export type PhysicalIndex = StoredIndex;

export class Table {
  /** Every physical index; while a schema change backfills, an index name may have two. */
  readonly indexes: PhysicalIndex[] = [];
  /**
   * A table new to the data whose registration has not run to its end
   * (`Database.#registerTable`): a watchdog cut it; the next use finishes it.
   */
  registering = false;
  /** Its row is among the unpersisted tables, or was written (a new table). */
  listed = false;
  /** A new table's indexes, made once (`Database.#registerTable`). */
  created: StoredIndex[] | undefined = undefined;
  /** Its new indexes are among the unpersisted ones, or were written. */
  indexesListed = false;

  constructor(
    readonly name: string,
    readonly number: number,
    public count: number,
  ) {}

  /** The index queries use: the ready one with this name. */
  queryable(indexName: string): PhysicalIndex | undefined {
    return this.indexes.find(
      (i) => i.name === indexName && i.state === "ready",
    );
  }
}

/**
 * The index entries a write changes: for each index, the old key out and the
 * new one in, and nothing at all for an index whose key the write leaves as
 * it was (a patch of unindexed fields touches no index).
 */
export function indexWritesFor(
  indexes: readonly PhysicalIndex[],
  docId: string,
  before: Doc | null,
  after: Doc | null,
): IndexWrite[] {
  const writes: IndexWrite[] = [];
  for (const index of indexes) {
    const remove = before === null ? null : documentKey(before, index);
    const add = after === null ? null : documentKey(after, index);
    if (remove !== null && add !== null && compareKeyBytes(remove, add) === 0)
      continue;
    writes.push({ indexId: index.indexId, docId, remove, add });
  }
  return writes;
}

/** A document's encoded key for an index. */
export function documentKey(doc: Doc, index: { keyFields: string[] }): Buffer {
  return encodeKey(indexKey(doc, index.keyFields));
}

type PreparedSchema = {
  schema: SchemaJson | null;
  /** Index ids, per table, that the schema installs and that are backfilled. */
  built: Map<string, number[]>;
};

/** The system indexes' fields (`indexFields`), one array each: callers key caches on them. */
const BY_ID_FIELDS = ["_id"];
const BY_CREATION_TIME_FIELDS = ["_creationTime"];

export class Database {
  readonly #store: SqliteStore;
  readonly #tablesByName = new Map<string, Table>();
  readonly #tablesByNumber = new Map<number, Table>();
  /** Tables (with their built-in indexes) named by a transaction but not yet
   *  written to SQLite. A table is persisted with the first commit after it was
   *  named; a rolled-back transaction only leaves an empty table behind, as in Convex. */
  readonly #unpersistedTables: StoredTable[] = [];
  readonly #unpersistedIndexes: StoredIndex[] = [];
  readonly #listeners = new Set<CommitListener>();
  /** id → table number (0 for strings that are not IDs); see `tableOfId`. */
  readonly #idTableNumbers = new Map<string, number>();
  readonly #cache = new DocumentCache();
  /** Snapshots pinned now (`snapshot`): each learns which documents commits change. */
  readonly #snapshots = new Set<ReadSnapshot>();
  #schema: SchemaJson | null = null;
  #prepared: PreparedSchema | null = null;
  /** Bumped by every schema preparation, so an older one still running stops. */
  #schemaGeneration = 0;
  #lastTs: bigint;
  #lastCreationTime: number;
  #nextTableNumber = FIRST_USER_TABLE_NUMBER;
  #nextIndexId = 1;
  #commits = 0;
  /** Index drops waiting for their entries to be deleted, a slice at a time. */
  readonly #drops: number[] = [];
  #dropping = false;
  readonly #syncHook: SyncHook | undefined;
  /**
   * Durability state (see the module comment).
   * - `#lastCommitTs`: the latest commit's ts (`#lastTs` may run ahead of it,
   *   `advanceClockPast`)
   * - `#durableTs`: every commit up to it is on disk; set when a sync ends
   * - `#syncing`: a sync is in flight; the next starts when it ends, if
   *   commits came meanwhile
   * - `#failure`: a sync failed; from then on nothing commits or becomes durable
   */
  #lastCommitTs: bigint;
  #durableTs: bigint;
  #undurableCommits = 0;
  #undurableBytes = 0;
  #syncing = false;
  #failure: Error | null = null;
  /** The commit running now; left set if a watchdog cut it short (`recoverCut`). */
  #inFlight: PreparedCommit | null = null;
  /**
   * Set by the runner around a shared window (see `commit`): commits made
   * meanwhile are announced, and their fsync started, by `releaseAnnouncements`.
   */
  holdAnnouncements = false;
  /** Commits whose listeners have not run yet. */
  #announcements: CommitResult[] = [];
  /** The last commit whose listeners ran. */
  #announcedThrough = 0;
  /** A commit is waiting for `#startSync` (`releaseAnnouncements`). */
  #syncWanted = false;
  #closed = false;
  #waiters: DurableWaiter[] = [];

  /** Text and vector search indexes: tables in the same SQLite file, kept up
   *  to date inside each commit's transaction (storage/searchIndex.ts,
   *  storage/vectorIndex.ts). */
  readonly textSearch: SearchIndexes;
  readonly vectorSearch: VectorIndexes;

  private constructor(store: SqliteStore, options: DatabaseOptions) {
    this.#store = store;
    this.#syncHook = options.syncHook;
    this.textSearch = new SearchIndexes(store.connection);
    this.vectorSearch = new VectorIndexes(store.connection);
    const registry = store.loadRegistry();
    this.#lastTs = registry.lastTs;
    // `SqliteStore.open` synced what a previous process left.
    this.#lastCommitTs = registry.lastTs;
    this.#durableTs = registry.lastTs;
    this.#lastCreationTime = registry.lastCreationTime;
    for (const { name, number, count } of registry.tables) {
      this.#addTable(name, number, count);
    }
    for (const index of registry.indexes) {
      const table = this.#tablesByNumber.get(index.tableNumber);
      if (table === undefined) {
        throw new Error(
          `Index ${index.indexId} names unknown table number ${index.tableNumber}`,
        );
      }
      this.#nextIndexId = Math.max(this.#nextIndexId, index.indexId + 1);
      // A backfill cut short by a restart stays, maintained by commits, and
      // resumes after its cursor if the next schema still wants it (setSchema
      // drops it otherwise).
      table.indexes.push(index);
    }
    for (const id of store.orphanedIndexIds()) this.#dropIndex(id);
    for (const [name, number] of Object.entries(SYSTEM_TABLES)) {
      const table =
        this.#tablesByName.get(name) ?? this.#registerTable(name, number);
      // System indexes do not wait for a schema: the scheduler reads them
      // from the start. Only a folder migrated from version 1 lacks them.
      for (const want of indexesOf(null, name)) {
        if (table.queryable(want.name) !== undefined) continue;
        const steps = this.#buildIndex(table, want);
        let step = steps.next();
        while (step.done !== true) step = steps.next();
        const index = table.indexes.find((i) => i.indexId === step.value)!;
        index.state = "ready";
        if (!this.#unpersistedIndexes.includes(index))
          this.#store.setIndexState(index.indexId, "ready");
      }
    }
  }

  /** Opens the database in `dataDir`, creating the directory and file if needed. */
  static open(dataDir: string, options: DatabaseOptions = {}): Database {
    fs.mkdirSync(dataDir, { recursive: true });
    return new Database(
      SqliteStore.open(path.join(dataDir, "db.sqlite3"), {
        walCapBytes: options.walCapBytes,
      }),
      options,
    );
  }

  /** The document cache: documents, their bytes, and its count of them (tests). */
  get cacheStats(): DocumentCache["stats"] {
    return this.#cache.stats;
  }

  /** The WAL's checkpoints so far (tests and benchmarks). */
  get checkpointStats(): SqliteStore["checkpointStats"] {
    return this.#store.checkpointStats;
  }

  /** Closes the file; commits still waiting for a group's fsync are synced first. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#schemaGeneration++;
    this.#drops.length = 0;
    this.textSearch.close();
    this.vectorSearch.close();
    if (this.#failure === null && this.#durableTs < this.#lastCommitTs) {
      try {
        this.#store.syncNow();
        this.#becameDurable(
          this.#lastCommitTs,
          this.#undurableCommits,
          this.#undurableBytes,
        );
      } catch (error) {
        this.#fail(error as Error);
      }
    }
    this.#store.close();
  }

  get lastTs(): bigint {
    return this.#lastTs;
  }

  /** The latest commit's timestamp (`lastTs` may run ahead of it). */
  get lastCommitTs(): bigint {
    return this.#lastCommitTs;
  }

  /** How many commits this process made; a transaction's snapshot is the value it started at. */
  get commitCount(): number {
    return this.#commits;
  }

  get schema(): SchemaJson | null {
    return this.#schema;
  }

  /** Whether every commit up to `ts` is on disk. */
  isDurable(ts: bigint): boolean {
    return ts <= this.#durableTs || this.#durableTs >= this.#lastCommitTs;
  }

  /**
   * Resolves once every commit up to `ts` is on disk: what a reader saw at
   * snapshot `ts`, or a mutation committed at `ts`, may be shown from then on.
   * Rejects if an fsync failed.
   */
  durable(ts: bigint): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    if (this.isDurable(ts)) return Promise.resolve();
    return new Promise((resolve, reject) =>
      this.#waiters.push({ ts, resolve, reject }),
    );
  }

  /**
   * The fsync in flight has returned, and what waits for it is released at
   * the event loop's next poll. Work that holds the main thread for a slice
   * can end it then and wait for that poll, so that frames waiting for the
   * fsync go out first (subscriptions.ts `#lane`).
   */
  get syncLanded(): boolean {
    return this.#syncing && this.#store.syncLanded;
  }

  /** Too many commits wait for an fsync: the committer should await `durable` before the next. */
  get backlogFull(): boolean {
    return (
      this.#undurableCommits >= MAX_UNDURABLE_COMMITS ||
      this.#undurableBytes >= MAX_UNDURABLE_BYTES
    );
  }

  onCommit(listener: CommitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  // ---- schema ------------------------------------------------------------

  /**
   * Gets a schema ready to install without holding the event loop: checks
   * existing documents when schema validation is on, and backfills every
   * index the schema adds or changes, in slices of SLICE_BUDGET_MS at most
   * (`Slice`). Commits made meanwhile keep the new indexes up to date. Throws
   * SchemaViolationError (and installs nothing) when a document does not
   * match, as a Convex push fails.
   */
  async prepareSchema(
    schema: SchemaJson | null,
    options: { progress?: BackfillProgress } = {},
  ): Promise<void> {
    const generation = ++this.#schemaGeneration;
    const steps = this.#prepare(schema, options.progress);
    const slice = new Slice();
    try {
      for (;;) {
        if (generation !== this.#schemaGeneration) throw new SupersededError();
        const step = slice.step(() => steps.next());
        if (step.done === true) break;
        if (!slice.roomForAnother()) {
          await yieldToEventLoop();
          await this.#store.roomInWal();
          slice.restart();
        }
      }
    } catch (error) {
      // Nothing will be installed from this preparation.
      if (generation === this.#schemaGeneration) this.#recentWrites = null;
      throw error;
    }
  }

  /**
   * Installs a schema: switches queries to its indexes and drops the ones it
   * no longer has. Cheap when `prepareSchema` ran for it, or when no index
   * changed; otherwise it checks and backfills right here, synchronously. A
   * violation leaves the old schema in place and throws.
   */
  setSchema(schema: SchemaJson | null): void {
    const prepared = this.#prepared;
    if (
      prepared === null ||
      JSON.stringify(prepared.schema) !== JSON.stringify(schema) ||
      // A table created since the preparation has indexes of the old schema.
      [...this.#tablesByName.keys()].some((name) => !prepared.built.has(name))
    ) {
      this.#schemaGeneration++;
      const steps = this.#prepare(schema);
      while (steps.next().done !== true);
    } else if (schema !== null && schema.schemaValidation) {
      // Documents written since the check was made were validated against
      // the old schema only.
      const error = this.#validateRecent(schema);
      if (error !== null) throw error;
    }
    const installed = this.#prepared!;
    this.#prepared = null;
    this.#recentWrites = null;
    this.#schema = schema;
    for (const tableSchema of schema?.schemaValidation === true
      ? schema.tables
      : []) {
      const key = validatorKey(tableSchema);
      if (this.#validatedAgainst(tableSchema.tableName) !== key)
        this.#store.setMeta(`validated:${tableSchema.tableName}`, key);
    }
    // A table written without a validator loses its mark.
    for (const name of this.#tablesByName.keys()) {
      const validated =
        schema?.schemaValidation === true &&
        schema.tables.some((t) => t.tableName === name);
      if (!validated && this.#validatedAgainst(name) !== null)
        this.#store.setMeta(`validated:${name}`, "");
    }
    for (const table of this.#tablesByName.values()) {
      const built = new Set(installed.built.get(table.name) ?? []);
      for (const index of [...table.indexes]) {
        if (!built.has(index.indexId)) {
          table.indexes.splice(table.indexes.indexOf(index), 1);
          this.#dropIndex(index.indexId);
        } else if (index.state === "backfilling") {
          index.state = "ready";
          if (!this.#unpersistedIndexes.includes(index)) {
            this.#store.setIndexState(index.indexId, "ready");
          }
        }
      }
    }
    const derived = derivedDefinitions(schema);
    this.textSearch.setSchema(derived.search, this.#documentsAfter);
    this.vectorSearch.setSchema(derived.vector, this.#documentsAfter);
  }

  /** The search index `indexName` of a table, as the schema declares it. */
  searchIndex(
    tableName: string,
    indexName: string,
  ): IndexLookup<SearchIndexDefinition> {
    const table = this.#schemaTable(tableName);
    const found = table?.searchIndexes?.find(
      (i) => i.indexDescriptor === indexName,
    );
    if (found !== undefined) {
      const index = searchDefinition(tableName, found);
      return this.textSearch.isReady(index)
        ? { state: "enabled", index }
        : { state: "staged" };
    }
    return table?.stagedSearchIndexes?.some(
      (i) => i.indexDescriptor === indexName,
    ) === true
      ? { state: "staged" }
      : { state: "missing" };
  }

  vectorIndex(
    tableName: string,
    indexName: string,
  ): IndexLookup<VectorIndexDefinition> {
    const table = this.#schemaTable(tableName);
    const found = table?.vectorIndexes?.find(
      (i) => i.indexDescriptor === indexName,
    );
    if (found !== undefined) {
      const index = vectorDefinition(tableName, found);
      return this.vectorSearch.isReady(index)
        ? { state: "enabled", index }
        : { state: "staged" };
    }
    return table?.stagedVectorIndexes?.some(
      (i) => i.indexDescriptor === indexName,
    ) === true
      ? { state: "staged" }
      : { state: "missing" };
  }

  /** Whether `indexName` is a staged database index (`stagedDbIndexes`). */
  isStagedIndex(tableName: string, indexName: string): boolean {
    return (
      this.#schemaTable(tableName)?.stagedDbIndexes?.some(
        (i) => i.indexDescriptor === indexName,
      ) ?? false
    );
  }

  /**
   * Validation and backfill as small steps: the caller runs them all at once
   * or yields to the event loop between them. Ends by recording which index
   * of each table the schema uses (`#prepared`).
   */
  *#prepare(
    schema: SchemaJson | null,
    progress?: BackfillProgress,
  ): Generator<void, void> {
    this.#prepared = null;
    this.#recentWrites = new Set();
    if (schema !== null && schema.schemaValidation) {
      for (const tableSchema of schema.tables) {
        const table = this.#tablesByName.get(tableSchema.tableName);
        if (table === undefined || table.count === 0) continue;
        // Every commit validates its writes against the installed schema, so
        // documents already checked against this same validator need no
        // second look (a reload with an unchanged schema reads none).
        if (this.#validatedAgainst(table.name) === validatorKey(tableSchema))
          continue;
        for (const doc of this.#walk(table)) {
          const error = this.#validateAgainst(tableSchema.documentType, doc);
          if (error !== null) {
            throw new SchemaViolationError(
              `Schema validation failed: document ${doc._id} in table "${tableSchema.tableName}" does not match the schema: ${error}`,
            );
          }
          yield;
        }
      }
    }
    const built = new Map<string, number[]>();
    for (const named of this.#tablesByName.values()) {
      const table = this.#registered(named);
      const ids: number[] = [];
      built.set(table.name, ids);
      for (const want of indexesOf(schema, table.name)) {
        const ready = table.indexes.find(
          (i) => i.state === "ready" && sameIndex(want, i),
        );
        if (ready !== undefined) {
          ids.push(ready.indexId);
          continue;
        }
        ids.push(yield* this.#buildIndex(table, want, progress));
      }
    }
    const derived = derivedDefinitions(schema);
    yield* this.textSearch.prepare(
      derived.search,
      this.#documentsAfter,
      progress,
    );
    yield* this.vectorSearch.prepare(
      derived.vector,
      this.#documentsAfter,
      progress,
    );
    this.#prepared = { schema, built };
  }

  /**
   * Creates (or resumes) a backfilling index with `want`'s fields and fills
   * it from the table's documents, a chunk per step; returns its id.
   */
  *#buildIndex(
    table: Table,
    want: { name: string; keyFields: string[] },
    progress?: BackfillProgress,
  ): Generator<void, number> {
    const existing = table.indexes.find(
      (i) => i.state === "backfilling" && sameIndex(want, i),
    );
    // A backfilling index left by a preparation that a newer one replaced,
    // or by a restart, continues from its cursor.
    const index: StoredIndex = existing ?? {
      indexId: this.#nextIndexId++,
      tableNumber: table.number,
      name: want.name,
      keyFields: want.keyFields,
      state: "backfilling",
    };
    if (existing === undefined) {
      if (this.#unpersistedTables.some((t) => t.number === table.number))
        this.#unpersistedIndexes.push(index);
      else this.#store.addIndex(index);
      table.indexes.push(index);
    }
    // Commits have kept the entries before the cursor current all along:
    // the index was in `table.indexes` since it was created, also across a
    // restart, so the walk resumes after it.
    const byId = table.queryable(BY_ID)!;
    const label = `${table.name}.${index.name}`;
    let chunk: { key: Buffer; docId: string }[] = [];
    let last: Doc | undefined;
    let stepStart = performance.now();
    const flush = () => {
      // Entries and the documents they were read from belong to one
      // synchronous step, so no commit slips between them; commits
      // between steps write their own entries to this index.
      this.#store.insertEntries(
        index.indexId,
        chunk,
        last === undefined ? undefined : documentKey(last, byId),
      );
      if (chunk.length > 0) progress?.(label, chunk.length);
      chunk = [];
    };
    for (const doc of this.#walk(
      table,
      this.#store.backfillCursor(index.indexId),
    )) {
      chunk.push({ key: documentKey(doc, index), docId: doc._id });
      last = doc;
      // Big documents end a chunk early, so a step stays short.
      if (
        chunk.length >= BACKFILL_CHUNK_ROWS ||
        performance.now() - stepStart >= BACKFILL_STEP_MS
      ) {
        flush();
        yield;
        stepStart = performance.now();
      }
    }
    flush();
    return index.indexId;
  }

  /** The validator every document of a table was last checked against ("" or null: none). */
  #validatedAgainst(tableName: string): string | null {
    const value = this.#store.getMeta(`validated:${tableName}`);
    return value === "" ? null : value;
  }

  /**
   * Documents written since the preparation in progress started, to validate
   * at install; null when none is, so that commits record nothing between
   * schema changes (the set would otherwise grow with every document written).
   */
  #recentWrites: Set<string> | null = null;

  #validateRecent(schema: SchemaJson): SchemaViolationError | null {
    for (const id of this.#recentWrites ?? []) {
      const table = this.tableOfId(id);
      const doc = this.getDocument(id);
      if (table === undefined || doc === null) continue;
      const tableSchema = schema.tables.find((t) => t.tableName === table.name);
      if (tableSchema === undefined) continue;
      const error = this.#validateAgainst(tableSchema.documentType, doc);
      if (error !== null) {
        return new SchemaViolationError(
          `Schema validation failed: document ${doc._id} in table "${table.name}" does not match the schema: ${error}`,
        );
      }
    }
    return null;
  }

  /**
   * Every committed document of a table in id order, safe across yields:
   * documents deleted meanwhile are skipped.
   */
  *#walk(table: Table, after?: Buffer): Generator<Doc> {
    const byId = table.queryable(BY_ID)!;
    for (const { doc } of this.scan(
      byId,
      afterCursor(rangeToInterval(FULL_RANGE), "asc", after),
      "asc",
      true,
    ))
      yield doc;
  }

  /** A table's documents after a `by_id` key, read as iterated (derivedIndexes.ts). */
  #documentsAfter = (tableName: string, after: Buffer): Iterable<Doc> => {
    const table = this.#tablesByName.get(tableName);
    if (table === undefined) return [];
    return this.#walk(table, after.length === 0 ? undefined : after);
  };

  // ---- reading -----------------------------------------------------------

  table(name: string): Table | undefined {
    const table = this.#tablesByName.get(name);
    return table === undefined ? undefined : this.#registered(table);
  }

  /** A committed document, from the cache or SQLite. */
  getDocument(id: string): Doc | null {
    return this.#load(id)?.doc ?? null;
  }

  /** One page of an index's committed entries (`ReadSnapshot.scan`). */
  scanEntries(
    indexId: number,
    interval: KeyInterval,
    order: Order,
    limit: number,
  ): IndexEntry[] {
    return this.#store.scanIndex(indexId, interval, order, limit);
  }

  /** `getDocument` with the length of its JSON; `keep`: into the cache if it is not there. */
  loadDocument(id: string, keep = true): { doc: Doc; bytes: number } | null {
    return this.#load(id, keep);
  }

  /** A committed document and the length of its JSON. */
  #load(id: string, keep = true): { doc: Doc; bytes: number } | null {
    const cached = this.#cache.get(id);
    if (cached !== undefined) return cached;
    const json = this.#store.getDocument(id);
    if (json === null) return null;
    const entry = decodeDocument(json);
    if (keep) this.#cache.set(id, entry.doc, entry.bytes);
    return entry;
  }

  /**
   * Committed entries of an index inside `interval`, in `order`, with their
   * documents. Reads SQLite a page at a time, each page starting after the last
   * key of the one before, so nothing holds a statement open between rows.
   * A commit between two rows (an optimistic query's scan spans event-loop
   * turns) may have deleted a document of the page already read: it is
   * skipped, and the query's validation sees the commit in its read set.
   */
  scan(
    index: PhysicalIndex,
    interval: KeyInterval,
    order: Order,
    skipMissing = false,
  ): Generator<{ key: Buffer; doc: Doc; bytes: number }> {
    let readAt = this.#commits;
    return scanPages(
      (remaining, limit) => {
        readAt = this.#commits;
        return this.#store.scanIndex(index.indexId, remaining, order, limit);
      },
      (id, keep) => this.#load(id, keep),
      interval,
      order,
      (docId) => {
        if (skipMissing || this.#commits !== readAt) return;
        throw outOfSync(index, docId);
      },
    );
  }

  /**
   * Pins the committed state as of now, to read across event-loop turns
   * while commits go on (`ReadSnapshot`); null when none can be pinned now
   * (MAX_SNAPSHOTS). Release it as soon as its reads are done.
   */
  snapshot(): ReadSnapshot | null {
    if (this.#failure !== null || this.#closed) return null;
    let pinned: StoreSnapshot | null;
    try {
      pinned = this.#store.snapshot();
    } catch (error) {
      // The open group's COMMIT failed: as a failed fsync, nothing more commits.
      this.#fail(error as Error);
      return null;
    }
    if (pinned === null) return null;
    const snapshot = new ReadSnapshot(
      this,
      {
        ...pinned,
        release: () => {
          this.#snapshots.delete(snapshot);
          pinned.release();
        },
      },
      this.#commits,
      this.#lastTs,
    );
    this.#snapshots.add(snapshot);
    return snapshot;
  }

  /** The table for `name`, registering a new user table if there is none yet. */
  tableForWrite(name: string): Table {
    const existing = this.#tablesByName.get(name);
    return existing === undefined
      ? this.#registerTable(name, this.#nextTableNumber)
      : this.#registered(existing);
  }

  /** The table an ID belongs to, or undefined for malformed IDs and unknown tables. */
  tableOfId(id: string): Table | undefined {
    let number = this.#idTableNumbers.get(id);
    if (number === undefined) {
      number = decodeId(id)?.tableNumber ?? 0;
      // Decoding is pure, so the cache only needs a size bound, not invalidation.
      if (this.#idTableNumbers.size >= ID_CACHE_SIZE)
        this.#idTableNumbers.clear();
      this.#idTableNumbers.set(id, number);
    }
    return this.#tablesByNumber.get(number);
  }

  isIdOfTable(tableName: string, id: string): boolean {
    return this.tableOfId(id)?.name === tableName;
  }

  /**
   * The fields an index was declared with (`["_creationTime"]` and `["_id"]` for
   * the built-in ones), or undefined when the table has no such index.
   */
  indexFields(tableName: string, indexName: string): string[] | undefined {
    if (indexName === BY_ID) return BY_ID_FIELDS;
    if (indexName === BY_CREATION_TIME) return BY_CREATION_TIME_FIELDS;
    return declaredIndexes(this.#schema, tableName).find(
      (i) => i.indexDescriptor === indexName,
    )?.fields;
  }

  /** A strictly increasing `_creationTime` in milliseconds. */
  nextCreationTime(): number {
    // 0.001 ms is above the float64 spacing at today's epoch (~0.00024 ms), so
    // the sum is always strictly greater (convex-test nudges the same way).
    const next = Math.max(Date.now(), this.#lastCreationTime + 0.001);
    this.#lastCreationTime = next;
    return next;
  }

  /**
   * Moves the clock forward so that future commits are later than `ts` (a
   * client that saw a later timestamp than ours, e.g. after a data reset).
   * A timestamp more than an hour ahead of the wall clock is ignored: no backend
   * issued it, and following it would let one client push every timestamp
   * toward the int64 limit.
   */
  advanceClockPast(ts: bigint): void {
    const limit = BigInt(Date.now() + MAX_CLOCK_ADVANCE_MS) * 1_000_000n;
    if (ts > this.#lastTs && ts <= limit) this.#lastTs = ts;
  }

  /** Checks a document against the schema; throws the error the caller should see. */
  validateDocument(tableName: string, doc: Doc): void {
    if (this.#schema === null || !this.#schema.schemaValidation) return;
    const tableSchema = this.#schemaTable(tableName);
    if (tableSchema === undefined) return;
    const error = this.#validateAgainst(tableSchema.documentType, doc);
    if (error !== null) {
      throw new SchemaViolationError(
        `Failed to insert or update a document in table "${tableName}" because it does not match the schema: ${error}`,
      );
    }
  }

  findSessionRequest(
    sessionId: string,
    requestId: number,
  ): { outcome: string; ts: bigint } | null {
    return this.#store.findSessionRequest(sessionId, requestId);
  }

  // ---- committing --------------------------------------------------------

  /**
   * Commits a transaction's writes (and the de-duplication record of the
   * mutation that made them) in one SQLite savepoint, updates the cache and
   * the clocks, tells the listeners what changed, and queues the commit for
   * the next group's fsync. Returns before that fsync: nothing about it may be
   * shown to anyone before `durable(ts)` resolves.
   *
   * While `holdAnnouncements` is set (the runner commits inside a shared
   * window, under a watchdog that may fire in host code), the listeners and
   * the fsync wait for `releaseAnnouncements`, outside the window, and what a
   * cut leaves is finished or undone by `recoverCut`: the part that runs
   * under the watchdog is a savepoint and idempotent updates.
   */
  commit(
    writes: Map<string, PendingWrite>,
    sessionRequest?: SessionRequestRecord,
  ): CommitResult {
    if (this.#failure !== null) throw this.#failure;
    // Its fsync would never come (`#startSync`), nor its `durable`.
    if (this.#closed) throw new Error("The database is closed");
    this.recoverCut();
    const commit = this.#prepareCommit(writes, sessionRequest);
    // Ahead of the savepoint, so that no later commit can take the same ts
    // even if this one is cut and undone (timestamps may skip).
    this.#lastTs = commit.result.ts;
    this.#inFlight = commit;
    try {
      this.#store.commit(commit.batch, commit.progress);
    } catch (error) {
      this.#inFlight = null;
      // The group's earlier commits are in the cache and were announced, but
      // no longer in the file: stop, as for a failed fsync.
      if (error instanceof CommitGroupLostError) this.#fail(error);
      throw error;
    }
    this.#apply(commit);
    this.#inFlight = null;
    if (!this.holdAnnouncements) this.releaseAnnouncements();
    return commit.result;
  }

  /**
   * Host code a function's watchdog cut short (deadline.ts) may have been in
   * `commit`: its savepoint is rolled back if SQLite had not released it yet,
   * and otherwise the rest of the commit is done, so the database is as if
   * the commit either never started or ran to its end. Returns what became of
   * it: "none" when no commit was cut. Called by the runner after a cut, and
   * by every commit first.
   */
  recoverCut(): "none" | "undone" | "kept" {
    const commit = this.#inFlight;
    if (commit === null) return "none";
    this.#inFlight = null;
    if (commit.progress.step < 5) {
      if (!this.#store.recoverCut(commit.batch, commit.progress))
        return "undone";
      commit.progress.step = 5;
    }
    this.#apply(commit);
    return "kept";
  }

  /**
   * Runs the commit listeners for the commits made since the last call, in
   * order, and starts the fsync they wait for. A no-op unless commits were
   * made while `holdAnnouncements` was set.
   */
  releaseAnnouncements(): void {
    this.holdAnnouncements = false;
    if (this.#syncWanted) {
      this.#syncWanted = false;
      this.#startSync();
    }
    let failure: Error | null = null;
    // Taken from the front one at a time: a listener that commits announces
    // the commits still queued before its own, in order.
    while (this.#announcements.length > 0) {
      const result = this.#announcements.shift()!;
      // A cut may have queued a commit twice (`#apply` ran again).
      if (result.commit <= this.#announcedThrough) continue;
      this.#announcedThrough = result.commit;
      for (const listener of this.#listeners) {
        try {
          listener(result);
        } catch (error) {
          failure ??= error as Error;
        }
      }
    }
    if (failure !== null) throw failure;
  }

  /** A commit's rows and what it changes in memory, computed before anything is written. */
  #prepareCommit(
    writes: Map<string, PendingWrite>,
    sessionRequest: SessionRequestRecord | undefined,
  ): PreparedCommit {
    const ts = this.#nextTs();
    const documentWrites: DocumentWrite[] = [];
    const indexWrites: IndexWrite[] = [];
    const counts = new Map<number, number>();
    const tables = new Set<string>();
    const changes: DocumentChange[] = [];
    const jsonById = new Map<string, string>();
    let bytes = 0;
    for (const [id, write] of writes) {
      if (write.doc !== null) write.doc = resolveCommitTs(write.doc, ts);
      const table = this.tableForWrite(write.table);
      tables.add(write.table);
      const before = write.inserted === true ? null : this.getDocument(id);
      const after = write.doc;
      changes.push({ table: write.table, id, before, after });
      const json = after === null ? null : JSON.stringify(convexToJson(after));
      if (json !== null) {
        jsonById.set(id, json);
        bytes += json.length;
      }
      documentWrites.push({
        id,
        tableNumber: table.number,
        json,
      });
      indexWrites.push(...indexWritesFor(table.indexes, id, before, after));

      const delta = (after === null ? 0 : 1) - (before === null ? 0 : 1);
      if (delta !== 0) {
        counts.set(
          table.number,
          (counts.get(table.number) ?? table.count) + delta,
        );
      }
    }
    return {
      batch: {
        ts,
        lastCreationTime: this.#lastCreationTime,
        newTables: [...this.#unpersistedTables],
        newIndexes: [...this.#unpersistedIndexes],
        writes: documentWrites,
        indexWrites,
        counts,
        sessionRequest,
        // Search index entries commit with their documents, or not at all
        // (a commit with none goes to the group writer's thread).
        inTransaction:
          this.textSearch.maintains(tables) ||
          this.vectorSearch.maintains(tables)
            ? () => {
                this.textSearch.apply(changes);
                this.vectorSearch.apply(changes);
              }
            : undefined,
      },
      progress: { step: 0 },
      result: { ts, commit: this.#commits + 1, tables, changes },
      jsonById,
      bytes,
      counted: false,
    };
  }

  /**
   * What a commit SQLite kept changes in memory. Every step sets a value
   * computed beforehand (or adds to a set), so running it again after a cut
   * (`recoverCut`) changes nothing it already did.
   */
  #apply(commit: PreparedCommit): void {
    const { batch, result, jsonById } = commit;
    removeEach(this.#unpersistedTables, batch.newTables);
    removeEach(this.#unpersistedIndexes, batch.newIndexes);
    if (batch.ts > this.#lastTs) this.#lastTs = batch.ts;
    this.#lastCommitTs = batch.ts;
    this.#commits = result.commit;
    if (!commit.counted) {
      // No call between these statements, so no cut either (V8 ends host
      // code only at a call or a loop's back edge).
      this.#undurableCommits++;
      this.#undurableBytes += commit.bytes;
      commit.counted = true;
    }
    for (const [number, count] of batch.counts)
      this.#tablesByNumber.get(number)!.count = count;
    for (const change of result.changes) {
      this.#recentWrites?.add(change.id);
      for (const snapshot of this.#snapshots) snapshot.changed(change.id);
      if (change.after === null) this.#cache.delete(change.id);
      else
        this.#cache.set(
          change.id,
          change.after,
          jsonById.get(change.id)!.length,
        );
    }
    this.#announcements.push(result);
    this.#syncWanted = true;
  }

  /** Starts a group's fsync unless one is in flight (its end starts the next). */
  #startSync(): void {
    if (this.#syncing || this.#closed || this.isDurable(this.#lastCommitTs))
      return;
    this.#syncing = true;
    // What the fsync covers is fixed when it is issued: every commit before.
    let upTo = this.#lastCommitTs;
    let commits = 0;
    let bytes = 0;
    const sync = () => {
      upTo = this.#lastCommitTs;
      commits = this.#undurableCommits;
      bytes = this.#undurableBytes;
      return this.#store.sync();
    };
    const synced =
      this.#syncHook === undefined
        ? sync()
        : this.#syncHook(sync, () => this.#undurableCommits);
    synced.then(
      () => {
        this.#syncing = false;
        if (this.#closed) return;
        this.#becameDurable(upTo, commits, bytes);
        this.#startSync();
      },
      (error: unknown) => {
        this.#syncing = false;
        this.#fail(error as Error);
      },
    );
  }

  #becameDurable(upTo: bigint, commits: number, bytes: number): void {
    if (upTo > this.#durableTs) this.#durableTs = upTo;
    this.#undurableCommits -= commits;
    this.#undurableBytes -= bytes;
    const waiting = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiting) {
      if (this.isDurable(waiter.ts)) waiter.resolve();
      else this.#waiters.push(waiter);
    }
  }

  /**
   * An fsync failed, or SQLite dropped a group: what it covered may or may
   * not be on disk, so nothing more is acknowledged or committed (a retried
   * fsync may report success for pages the kernel already dropped, which is
   * why PostgreSQL stops too).
   */
  #fail(error: Error): void {
    if (this.#failure !== null) return;
    this.#failure = new Error(
      `Recent writes may not be on disk (${error.message}); restart the backend`,
    );
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#failure);
  }

  #nextTs(): bigint {
    const now = BigInt(Date.now()) * 1_000_000n;
    return now > this.#lastTs ? now : this.#lastTs + 1n;
  }

  #addTable(name: string, number: number, count: number): Table {
    const table = new Table(name, number, count);
    this.#tablesByName.set(name, table);
    this.#tablesByNumber.set(number, table);
    if (number >= this.#nextTableNumber) this.#nextTableNumber = number + 1;
    return table;
  }

  /**
   * A table new to the data, with its built-in indexes and any the schema
   * declares (all empty, so ready). It runs inside a function's window (a
   * mutation's first insert into the table), where V8's watchdog may end it
   * at any call: each step checks whether it was done, the table is published
   * by name first (a rerun then keeps its number) and stays `registering`
   * until the last one, and its next use finishes it (`tableForWrite`,
   * `table`, a schema's preparation). A cut used to leave the table without
   * its indexes for good: documents then committed had no index entries (a
   * query of the table returned nothing), and the next schema push failed.
   */
  #registerTable(name: string, number: number): Table {
    let table = this.#tablesByName.get(name);
    if (table === undefined) {
      // Its number is taken first: a cut after this leaves a gap, never two
      // tables of one number (a cut between publishing the table and taking
      // its number gave the next new table the same one, and the commit that
      // wrote both failed on `tables.number`, losing it and every later one).
      if (number >= this.#nextTableNumber) this.#nextTableNumber = number + 1;
      table = new Table(name, number, 0);
      table.registering = true;
      this.#tablesByName.set(name, table);
    }
    if (this.#tablesByNumber.get(table.number) !== table)
      this.#tablesByNumber.set(table.number, table);
    if (!table.listed) {
      // The flag right after the push, with no call between: listed once.
      this.#unpersistedTables.push({ name, number: table.number, count: 0 });
      table.listed = true;
    }
    // Its indexes are made once, with no effect but their ids (a cut while
    // making them leaves gaps), then listed and added each by one push with
    // its flag right after. A cut between adding an index to the table and
    // listing it used to keep the index in memory only: after a restart the
    // table had no `by_id`, and the next schema push failed with a TypeError.
    const created = (table.created ??= indexesOf(this.#schema, name).map(
      ({ name: indexName, keyFields }): StoredIndex => ({
        indexId: this.#nextIndexId++,
        tableNumber: table.number,
        name: indexName,
        keyFields,
        state: "ready",
      }),
    ));
    if (!table.indexesListed) {
      this.#unpersistedIndexes.push(...created);
      table.indexesListed = true;
    }
    // A new table has no index before this push.
    if (table.indexes.length === 0) table.indexes.push(...created);
    table.registering = false;
    return table;
  }

  /** `table`, its registration finished if a cut ended it (`#registerTable`). */
  #registered(table: Table): Table {
    return table.registering
      ? this.#registerTable(table.name, table.number)
      : table;
  }

  /** Forgets an index now and deletes its entries in slices that yield. */
  #dropIndex(indexId: number): void {
    const pending = this.#unpersistedIndexes.findIndex(
      (i) => i.indexId === indexId,
    );
    if (pending !== -1) {
      this.#unpersistedIndexes.splice(pending, 1);
      return;
    }
    this.#store.dropIndex(indexId);
    this.#drops.push(indexId);
    if (this.#dropping) return;
    this.#dropping = true;
    const step = () => {
      const indexId = this.#drops[0];
      if (indexId === undefined) {
        this.#dropping = false;
        return;
      }
      const slice = new Slice();
      do {
        if (
          slice.step(() => this.#store.deleteEntries(indexId, DROP_ROWS)) === 0
        ) {
          this.#drops.shift();
          break;
        }
      } while (slice.roomForAnother());
      setImmediate(step);
    };
    setImmediate(step);
  }

  #schemaTable(tableName: string): SchemaJson["tables"][number] | undefined {
    return this.#schema?.tables.find((t) => t.tableName === tableName);
  }

  #validateAgainst(documentType: ValidatorJSON, doc: Doc): string | null {
    const { _id: _ignoredId, _creationTime: _ignoredTime, ...fields } = doc;
    return validateValue(documentType, fields, {
      tableNameOfId: (id) => this.tableOfId(id)?.name ?? null,
    });
  }
}

/** A preparation that a newer schema replaced before it finished. */
export class SupersededError extends Error {
  constructor() {
    super("A newer schema replaced this one before its indexes were ready");
    this.name = "SupersededError";
  }
}

function indexesOf(
  schema: SchemaJson | null,
  tableName: string,
): { name: string; keyFields: string[] }[] {
  return [
    ...builtInIndexes(),
    ...declaredIndexes(schema, tableName).map((i) => ({
      name: i.indexDescriptor,
      keyFields: indexedFieldsWithSuffix(i.fields),
    })),
  ];
}

function validatorKey(tableSchema: SchemaJson["tables"][number]): string {
  return JSON.stringify(tableSchema.documentType);
}

function declaredIndexes(
  schema: SchemaJson | null,
  tableName: string,
): SchemaJson["tables"][number]["indexes"] {
  return (
    SYSTEM_INDEXES[tableName] ??
    schema?.tables.find((t) => t.tableName === tableName)?.indexes ??
    []
  );
}

function sameIndex(
  a: { name: string; keyFields: string[] },
  b: { name: string; keyFields: string[] },
): boolean {
  return (
    a.name === b.name &&
    a.keyFields.length === b.keyFields.length &&
    a.keyFields.every((f, i) => f === b.keyFields[i])
  );
}

/** Removes from `list` each element of `gone` (by identity); removing twice changes nothing. */
function removeEach<T>(list: T[], gone: readonly T[]): void {
  if (gone.length === 0) return;
  const drop = new Set(gone);
  let kept = 0;
  for (const item of list) if (!drop.has(item)) list[kept++] = item;
  list.length = kept;
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * The committed state as of one moment, for reads that span event-loop
 * turns while commits land (a query set that commits would otherwise keep
 * invalidating faster than it runs): what Convex's MVCC gives every query,
 * here a read transaction of a connection of its own (`SqliteStore.snapshot`).
 * - `commit`, `ts`: the commit count and timestamp it shows.
 * - Index ranges come from the pinned connection once a commit has landed
 *   (before that, the latest state is the snapshot's); documents no commit
 *   has changed since come from the database's own path and its cache, so a
 *   snapshot costs about what the latest state does.
 * - Search and vector indexes are not covered: a run that uses them is only
 *   valid if no commit landed since (callers check, `Transaction.readLatest`).
 */
export class ReadSnapshot {
  readonly commit: number;
  readonly ts: bigint;
  readonly #db: Database;
  readonly #pinned: StoreSnapshot;
  /** Documents commits have changed since the pin. */
  readonly #changed = new Set<string>();
  #released = false;

  constructor(db: Database, pinned: StoreSnapshot, commit: number, ts: bigint) {
    this.#db = db;
    this.#pinned = pinned;
    this.commit = commit;
    this.ts = ts;
  }

  /** No commit has landed since the snapshot was pinned. */
  get current(): boolean {
    return this.#db.commitCount === this.commit;
  }

  /**
   * Commits since the pin grew the WAL file by its cap (it cannot rewind
   * past a pinned reader): release this one and pin a newer one, or the
   * file grows with every commit for as long as it is held.
   */
  get expired(): boolean {
    return !this.current && this.#pinned.expired();
  }

  getDocument(id: string): Doc | null {
    return this.#load(id)?.doc ?? null;
  }

  scan(
    index: PhysicalIndex,
    interval: KeyInterval,
    order: Order,
    skipMissing = false,
  ): Generator<{ key: Buffer; doc: Doc; bytes: number }> {
    this.#check();
    return scanPages(
      (remaining, limit) =>
        this.current
          ? this.#db.scanEntries(index.indexId, remaining, order, limit)
          : this.#pinned.scanIndex(index.indexId, remaining, order, limit),
      (id, keep) => this.#load(id, keep),
      interval,
      order,
      (docId) => {
        // One snapshot holds both the entry and its document.
        if (skipMissing) return;
        throw outOfSync(index, docId);
      },
    );
  }

  release(): void {
    this.#released = true;
    this.#changed.clear();
    this.#pinned.release();
  }

  /** A commit changed this document (`Database`, as it applies the commit). */
  changed(id: string): void {
    this.#changed.add(id);
  }

  #load(id: string, keep = true): { doc: Doc; bytes: number } | null {
    this.#check();
    if (!this.#changed.has(id)) return this.#db.loadDocument(id, keep);
    const json = this.#pinned.getDocument(id);
    return json === null ? null : decodeDocument(json);
  }

  #check(): void {
    if (this.#released)
      throw new Error("Internal error: read from a released snapshot");
  }
}

/** A stored document's Convex JSON, decoded, with its length. */
function decodeDocument(json: string): { doc: Doc; bytes: number } {
  return {
    doc: jsonToConvex(JSON.parse(json) as JSONValue) as Doc,
    bytes: json.length,
  };
}

function outOfSync(index: PhysicalIndex, docId: string): Error {
  return new Error(
    `Index ${index.name} is out of sync: ${docId} has an entry but no document`,
  );
}

/**
 * An index range read a page at a time (`Database.scan`): each page starts
 * after the last key of the one before, growing from FIRST_PAGE_ROWS to
 * MAX_PAGE_ROWS; `missing` decides about an entry whose document is gone.
 */
function* scanPages(
  page: (remaining: KeyInterval, limit: number) => IndexEntry[],
  load: (id: string, keep: boolean) => { doc: Doc; bytes: number } | null,
  interval: KeyInterval,
  order: Order,
  missing: (docId: string) => void,
): Generator<{ key: Buffer; doc: Doc; bytes: number }> {
  let remaining = interval;
  let pageRows = FIRST_PAGE_ROWS;
  let rows = 0;
  for (;;) {
    const entries = page(remaining, pageRows);
    for (const { key, docId } of entries) {
      const loaded = load(docId, rows++ < SCAN_CACHED_ROWS);
      if (loaded === null) {
        missing(docId);
        continue;
      }
      yield { key, doc: loaded.doc, bytes: loaded.bytes };
    }
    if (entries.length < pageRows) return;
    remaining = afterCursor(remaining, order, entries[entries.length - 1].key);
    pageRows = Math.min(pageRows * 4, MAX_PAGE_ROWS);
  }
}

/**
 * Least recently used documents go first once either bound is passed.
 *
 * Reads run inside functions' windows, where V8's watchdog ends host code at
 * any call: every change of the map is followed by its change of the byte
 * count with no call between, so a cut leaves the two in step (a cut between
 * the count's change and the map's left it off by a document each time, for
 * good, and the byte bound with it).
 */
class DocumentCache {
  readonly #docs = new Map<string, { doc: Doc; bytes: number }>();
  #bytes = 0;
  /** Where eviction goes on (`#evictOldest`). */
  #oldest: Iterator<string> | null = null;
  /**
   * The entry eviction is removing: a cut after the iterator passed it and
   * before it went would leave it behind the iterator, kept until the cache
   * empties; the next eviction removes it first.
   */
  #evicting: string | undefined = undefined;

  get(id: string): { doc: Doc; bytes: number } | undefined {
    const entry = this.#docs.get(id);
    if (entry === undefined) return undefined;
    // To the back, as most recently used.
    this.#docs.delete(id);
    this.#bytes -= entry.bytes;
    this.#docs.set(id, entry);
    this.#bytes += entry.bytes;
    return entry;
  }

  set(id: string, doc: Doc, bytes: number): void {
    this.delete(id);
    this.#docs.set(id, { doc, bytes });
    this.#bytes += bytes;
    while (
      this.#docs.size > DOC_CACHE_MAX_DOCS ||
      (this.#bytes > DOC_CACHE_MAX_BYTES && this.#docs.size > 0)
    ) {
      this.#evictOldest();
    }
  }

  /** What it holds: documents, and their bytes as counted (tests). */
  get stats(): { docs: number; bytes: number; countedBytes: number } {
    let bytes = 0;
    for (const entry of this.#docs.values()) bytes += entry.bytes;
    return { docs: this.#docs.size, bytes, countedBytes: this.#bytes };
  }

  /**
   * Drops the least recently used entry: the Map's first, in insertion
   * order (`get` moves an entry to the end). Found with one iterator kept
   * across evictions: every delete leaves a hole at the front of V8's
   * ordered table until it is rehashed, which a fresh `keys().next()` walks
   * again each time (14 µs an eviction at 20,000 entries, against 0.3 µs).
   * Everything before the iterator has been evicted or moved behind it, so
   * it ends only when the cache is empty.
   */
  #evictOldest(): void {
    // One the iterator passed and a cut kept from going (`#evicting`).
    const passed = this.#evicting;
    if (passed !== undefined) {
      this.#evicting = undefined;
      this.delete(passed);
    }
    for (;;) {
      this.#oldest ??= this.#docs.keys();
      const next = this.#oldest.next();
      if (next.done !== true) {
        this.#evicting = next.value;
        this.delete(next.value);
        this.#evicting = undefined;
        return;
      }
      this.#oldest = null;
      if (this.#docs.size === 0) return;
    }
  }

  delete(id: string): void {
    const entry = this.#docs.get(id);
    if (entry === undefined) return;
    this.#docs.delete(id);
    this.#bytes -= entry.bytes;
  }
}

/** The search and vector indexes a schema declares (staged ones are not built). */
function derivedDefinitions(schema: SchemaJson | null): {
  search: SearchIndexDefinition[];
  vector: VectorIndexDefinition[];
} {
  const tables = schema?.tables ?? [];
  return {
    search: tables.flatMap((t) =>
      (t.searchIndexes ?? []).map((i) => searchDefinition(t.tableName, i)),
    ),
    vector: tables.flatMap((t) =>
      (t.vectorIndexes ?? []).map((i) => vectorDefinition(t.tableName, i)),
    ),
  };
}

function searchDefinition(
  table: string,
  index: SearchIndexJson,
): SearchIndexDefinition {
  return {
    table,
    name: index.indexDescriptor,
    searchField: index.searchField,
    filterFields: index.filterFields,
  };
}

function vectorDefinition(
  table: string,
  index: VectorIndexJson,
): VectorIndexDefinition {
  return {
    table,
    name: index.indexDescriptor,
    vectorField: index.vectorField,
    dimensions: index.dimensions,
    filterFields: index.filterFields,
  };
}
