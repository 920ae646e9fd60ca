/**
 * What text-search and vector indexes share: indexes derived from a table's
 * documents, kept in SQLite beside them, reconciled with the schema's
 * definitions, backfilled a chunk at a time, and maintained from each commit's
 * document changes.
 *
 * Lifecycle of an index (keyed "table.index", definition stored as JSON):
 * - created by `prepare` (a schema being readied) or `setSchema` (installed)
 *   when the schema declares it and no index with that definition exists; it
 *   starts backfilling with an empty cursor;
 * - backfilling: each step reads the next BACKFILL_CHUNK_DOCS documents after
 *   the cursor (in `by_id` order; fewer if they take over BACKFILL_STEP_MS to
 *   index) and writes their entries and the new cursor
 *   (the last document's `by_id` key) in one SQLite transaction, so a restart
 *   resumes where the last step stopped. Commits meanwhile update the entries
 *   of documents at or before the cursor; later ones are read by a later step.
 *   `prepare` runs the steps while a schema is readied (the caller yields to
 *   the event loop between them); what `setSchema` installs unbuilt
 *   continues in slices of SLICE_BUDGET_MS at most (`Slice`), and the index
 *   answers "currently backfilling" (`isReady` false) until its last step;
 * - built (no cursor): kept current by `apply` inside every commit's SQLite
 *   transaction;
 * - dropped by the first `setSchema` that no longer declares it, or rebuilt
 *   when its definition changed. An unchanged definition is left alone, so a
 *   restart or a reload costs nothing per document.
 *
 * Usage (searchIndex.ts, vectorIndex.ts):
 *   readonly #derived = new DerivedIndexes(db, "search", { keyOf, stored, drop, put, insert, remove });
 *   yield* this.#derived.prepare(definitions, docsAfter);  // while readying a schema
 *   this.#derived.setSchema(definitions, docsAfter);       // at install
 *   this.#derived.apply(changes);                          // inside the commit transaction
 */
import type BetterSqlite3 from "better-sqlite3";
import { indexKey } from "../query/indexRange.ts";
import { compareKeyBytes, encodeKey } from "../query/keys.ts";
import type { DocumentChange } from "../query/readSet.ts";
import type { Doc } from "../values/wire.ts";
import { backfillTransaction, quiesceWriter } from "./sqliteStore.ts";

/** Documents per backfill step: one SQLite transaction each. */
export const BACKFILL_CHUNK_DOCS = 200;
/** A step ends early once it has run this long (a chunk of long documents). */
const BACKFILL_STEP_MS = 5;
/**
 * Backfills, validation and index drops hold the event loop for at most about
 * this long at a time (issue 6 allows a client to be held 50 ms; we aim at 20).
 */
export const SLICE_BUDGET_MS = 15;

/**
 * Times one slice of steps: it ends before a step that, if as long as the one
 * before it, would take it past SLICE_BUDGET_MS, so a slice's length does not
 * depend on how much a step does (documents of 100 bytes or of 1 MB). A slice
 * always runs one step.
 *
 * Usage:
 *   const slice = new Slice();
 *   do slice.step(() => work()); while (!done && slice.roomForAnother());
 */
export class Slice {
  #start = performance.now();
  #lastStepMs = 0;

  step<T>(work: () => T): T {
    const started = performance.now();
    try {
      return work();
    } finally {
      this.#lastStepMs = performance.now() - started;
    }
  }

  roomForAnother(): boolean {
    return performance.now() - this.#start + this.#lastStepMs < SLICE_BUDGET_MS;
  }

  /** A new slice, after yielding. */
  restart(): void {
    this.#start = performance.now();
  }
}

/** Where an index's rows are filed: its table and name. */
export function derivedIndexKey(definition: {
  table: string;
  name: string;
}): string {
  return `${definition.table}.${definition.name}`;
}

/** How one kind of derived index stores its definitions and entries. */
export type DerivedIndexStore<D extends { table: string }> = {
  keyOf(definition: D): string;
  /** The indexes created so far, with their definitions as JSON. */
  stored(): { key: string; definition: string }[];
  /** Removes an index's definition and every entry. */
  drop(key: string): void;
  put(key: string, definitionJson: string): void;
  insert(definition: D, doc: Doc): void;
  remove(definition: D, doc: Doc): void;
};

/**
 * The committed documents of `table` after the `by_id` key `after` (from the
 * first when it is empty), in `by_id` order, read as the caller iterates: a
 * step takes what it needs within one synchronous run.
 */
export type DocumentsAfter = (table: string, after: Buffer) => Iterable<Doc>;

/** Called after each backfill step with the index and how many documents it added. */
export type BackfillProgress = (index: string, documents: number) => void;

type DerivedIndex<D> = {
  definition: D;
  json: string;
  /** The `by_id` key of the last document backfilled (empty: none yet), or
   *  null once built. Persisted with each step. */
  cursor: Buffer | null;
};

/** A document's `by_id` key, the order backfills walk in. */
function idKey(id: string): Buffer {
  return encodeKey(indexKey({ _id: id }, ["_id"]));
}

export class DerivedIndexes<D extends { table: string }> {
  readonly #db: BetterSqlite3.Database;
  readonly #kind: string;
  readonly #store: DerivedIndexStore<D>;
  /** Every index created and not dropped, built or not: commits maintain all of them. */
  readonly #indexes = new Map<string, DerivedIndex<D>>();
  /** Keys the installed schema declares (set by `setSchema`). */
  #installed = new Set<string>();
  #docsAfter: DocumentsAfter | null = null;
  #backgroundScheduled = false;
  #closed = false;
  readonly #stmt: {
    cursors: BetterSqlite3.Statement<[string]>;
    setCursor: BetterSqlite3.Statement<[string, string, Buffer]>;
    clearCursor: BetterSqlite3.Statement<[string, string]>;
  };

  constructor(
    db: BetterSqlite3.Database,
    kind: string,
    store: DerivedIndexStore<D>,
  ) {
    this.#db = db;
    this.#kind = kind;
    this.#store = store;
    db.exec(`
      CREATE TABLE IF NOT EXISTS derived_index_backfills (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        cursor BLOB NOT NULL,
        PRIMARY KEY (kind, key)
      ) WITHOUT ROWID;
    `);
    this.#stmt = {
      cursors: db.prepare(
        "SELECT key, cursor FROM derived_index_backfills WHERE kind = ?",
      ),
      setCursor: db.prepare(
        "INSERT INTO derived_index_backfills (kind, key, cursor) VALUES (?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET cursor = excluded.cursor",
      ),
      clearCursor: db.prepare(
        "DELETE FROM derived_index_backfills WHERE kind = ? AND key = ?",
      ),
    };
    const cursors = new Map(
      (this.#stmt.cursors.all(kind) as { key: string; cursor: Buffer }[]).map(
        (row) => [row.key, row.cursor],
      ),
    );
    for (const { key, definition } of store.stored()) {
      this.#indexes.set(key, {
        definition: JSON.parse(definition) as D,
        json: definition,
        cursor: cursors.get(key) ?? null,
      });
    }
  }

  /**
   * Creates and backfills, a step per yield, the declared indexes that do not
   * exist yet or were cut short. One whose definition changed while the
   * installed schema serves the old one is left for `setSchema`.
   */
  *prepare(
    definitions: readonly D[],
    docsAfter: DocumentsAfter,
    progress?: BackfillProgress,
  ): Generator<void, void> {
    for (const definition of definitions) {
      const key = this.#store.keyOf(definition);
      const json = JSON.stringify(definition);
      let index = this.#indexes.get(key);
      if (index !== undefined && index.json !== json) {
        if (this.#installed.has(key)) continue;
        this.#drop(key);
        index = undefined;
      }
      index ??= this.#create(key, definition, json);
      while (index.cursor !== null && !this.#closed) {
        this.#step(key, index, docsAfter, progress);
        yield;
      }
    }
  }

  /**
   * Installs the schema's definitions: drops undeclared indexes, recreates
   * changed ones, and backfills what is not built in later slices.
   */
  setSchema(definitions: readonly D[], docsAfter: DocumentsAfter): void {
    const wanted = new Map(
      definitions.map((d) => [this.#store.keyOf(d), d] as const),
    );
    for (const [key, index] of [...this.#indexes]) {
      const want = wanted.get(key);
      if (want === undefined || JSON.stringify(want) !== index.json)
        this.#drop(key);
    }
    for (const [key, definition] of wanted) {
      if (!this.#indexes.has(key))
        this.#create(key, definition, JSON.stringify(definition));
    }
    this.#installed = new Set(wanted.keys());
    this.#docsAfter = docsAfter;
    this.#scheduleBackground();
  }

  /** Whether the index exists with this definition and is fully built. */
  isReady(definition: D): boolean {
    const index = this.#indexes.get(this.#store.keyOf(definition));
    return (
      index !== undefined &&
      index.cursor === null &&
      index.json === JSON.stringify(definition)
    );
  }

  /** Whether a commit that changed these tables has anything for `apply` to do. */
  maintains(tables: ReadonlySet<string>): boolean {
    for (const index of this.#indexes.values())
      if (tables.has(index.definition.table)) return true;
    return false;
  }

  /** Applies a commit's document changes; call inside its SQLite transaction. */
  apply(changes: readonly DocumentChange[]): void {
    for (const change of changes) {
      let key: Buffer | undefined;
      for (const index of this.#indexes.values()) {
        if (index.definition.table !== change.table) continue;
        if (index.cursor !== null) {
          // Not reached by the backfill yet: a later step reads the document as committed.
          key ??= idKey(change.id);
          if (compareKeyBytes(key, index.cursor) > 0) continue;
        }
        if (change.before !== null)
          this.#store.remove(index.definition, change.before);
        if (change.after !== null)
          this.#store.insert(index.definition, change.after);
      }
    }
  }

  /** Stops background backfills (the database is closing). */
  close(): void {
    this.#closed = true;
  }

  #create(key: string, definition: D, json: string): DerivedIndex<D> {
    const index = { definition, json, cursor: Buffer.alloc(0) };
    quiesceWriter(this.#db);
    this.#db.transaction(() => {
      this.#store.put(key, json);
      this.#stmt.setCursor.run(this.#kind, key, index.cursor);
    })();
    this.#indexes.set(key, index);
    return index;
  }

  #drop(key: string): void {
    quiesceWriter(this.#db);
    this.#db.transaction(() => {
      this.#store.drop(key);
      this.#stmt.clearCursor.run(this.#kind, key);
    })();
    this.#indexes.delete(key);
  }

  /**
   * One backfill step: the next documents after the cursor and the new
   * cursor, in one transaction. A step ends after BACKFILL_CHUNK_DOCS
   * documents, or earlier once it has run BACKFILL_STEP_MS (long documents).
   */
  #step(
    key: string,
    index: DerivedIndex<D>,
    docsAfter: DocumentsAfter,
    progress: BackfillProgress | undefined,
  ): void {
    const started = performance.now();
    let count = 0;
    backfillTransaction(this.#db, () => {
      let last: Doc | undefined;
      let more = false;
      for (const doc of docsAfter(index.definition.table, index.cursor!)) {
        if (
          count > 0 &&
          (count >= BACKFILL_CHUNK_DOCS ||
            performance.now() - started >= BACKFILL_STEP_MS)
        ) {
          more = true;
          break;
        }
        this.#store.insert(index.definition, doc);
        count++;
        last = doc;
      }
      index.cursor = more ? idKey(last!._id) : null;
      if (index.cursor === null) this.#stmt.clearCursor.run(this.#kind, key);
      else this.#stmt.setCursor.run(this.#kind, key, index.cursor);
    });
    progress?.(key, count);
  }

  /** Backfills installed indexes for up to one slice; true when none is left unbuilt. */
  #backfillSlice(): boolean {
    const docsAfter = this.#docsAfter;
    if (docsAfter === null) return true;
    const slice = new Slice();
    for (const key of this.#installed) {
      const index = this.#indexes.get(key);
      while (index !== undefined && index.cursor !== null) {
        if (this.#closed) return false;
        slice.step(() => this.#step(key, index, docsAfter, undefined));
        if (!slice.roomForAnother()) return false;
      }
    }
    return true;
  }

  #allBuilt(): boolean {
    for (const key of this.#installed)
      if (this.#indexes.get(key)?.cursor !== null) return false;
    return true;
  }

  #scheduleBackground(): void {
    if (this.#backgroundScheduled || this.#closed || this.#allBuilt()) return;
    this.#backgroundScheduled = true;
    setImmediate(() => {
      this.#backgroundScheduled = false;
      if (this.#closed) return;
      if (!this.#backfillSlice()) this.#scheduleBackground();
    });
  }
}

/**
 * Rows read a page at a time (PAGE_ROWS, keyed on a document id, `idOf`,
 * after the last page's last), not through one `.iterate()`:
 * a function's watchdog may cut the host code that reads them (a search is
 * a syscall inside the function's window), and an iterator cut open left
 * its statement, and with it the whole connection, busy ("This database
 * connection is busy executing a query"), so every later commit failed.
 * A page is one native call, which a cut cannot split.
 */
export function* pages<Row>(
  page: (after: string) => Row[],
  idOf: (row: Row) => string,
): Generator<Row> {
  let after = "";
  for (;;) {
    const rows = page(after);
    yield* rows;
    if (rows.length < PAGE_ROWS) return;
    after = idOf(rows[rows.length - 1]);
  }
}

/** Rows a page of `pages` holds. */
export const PAGE_ROWS = 1_024;
