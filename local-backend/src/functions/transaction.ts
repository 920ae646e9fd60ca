/**
 * One query or mutation's view of the database: reads of committed state with
 * this transaction's own writes layered on top, the query engine (index scans,
 * filters, limits, pagination) and the read set used for invalidation.
 *
 * Writes live in layers, one per function call: the top-level function writes
 * to `root`, and each nested `ctx.runMutation` / `ctx.runQuery` gets a child
 * layer that sees its ancestors' writes and is folded into its parent only if
 * it succeeds (as convex-test's `DatabaseFake` write stack). Layers form a tree,
 * not a stack, so calls a function runs concurrently (`Promise.all` over
 * `runMutation`s, or a write while a nested call is open) each keep their own
 * writes. Nothing reaches committed state until `Database.commit(tx.pendingWrites())`.
 *
 * Concurrency. A mutation starts in a slot of the runner's writer executor,
 * where no other commit can land, and its reads check that none did
 * (`#check`), so a caller that breaks this rule gets an error rather than a
 * mixed snapshot. A query's transaction is `optimistic`: commits may land
 * while it runs, and the runner validates its read set against them when it
 * finishes (functions/commitLog.ts), discarding a run that overlaps one. A
 * mutation that cannot end in its slot is `release`d to the same regime:
 * validated, then committed, in a later slot.
 */
import { createHash } from "node:crypto";
import { convexToJson, type JSONValue, type Value } from "convex/values";
import { filterMatches } from "../query/filter.ts";
import {
  boundsToKeyRange,
  compileIndexRange,
  indexKey,
  indexedFieldsWithSuffix,
  type IndexRangeExpr,
} from "../query/indexRange.ts";
import {
  afterCursor,
  compareKeyBytes,
  encodeKey,
  FULL_RANGE,
  intervalContains,
  isPast,
  type KeyInterval,
  type Order,
  rangeToInterval,
} from "../query/keys.ts";
import type { Doc } from "../values/wire.ts";
import {
  BY_CREATION_TIME,
  type Database,
  type PendingWrite,
  type ReadSnapshot,
} from "../storage/database.ts";
import {
  encodeId,
  IdDecodeError,
  newInternalId,
  parseId,
} from "../values/ids.ts";
import { advance, ReadSet } from "../query/readSet.ts";
import { checkDocument, UsageMeter } from "./limits.ts";
import {
  compileSearch,
  MAX_CANDIDATE_REVISIONS,
  scoreDocument,
  searchCouldMatch,
  type SerializedSearchFilter,
} from "../query/textSearch.ts";
import { compareHits } from "../storage/searchIndex.ts";

/** convex 1.48 `query_impl.ts` serialized query. */
export type SerializedQuery = {
  source:
    | { type: "FullTableScan"; tableName: string; order: Order | null }
    | {
        type: "IndexRange";
        indexName: string;
        range: IndexRangeExpr[];
        order: Order | null;
      }
    | { type: "Search"; indexName: string; filters: unknown[] };
  operators: ({ filter: JSONValue } | { limit: number })[];
};

/** Rows `pageSteps` reads between two pauses. */
const PAGE_STEP_ROWS = 64;

export type PageRequest = {
  query: SerializedQuery;
  cursor: string | null;
  endCursor: string | null;
  pageSize: number;
  maximumRowsRead: number | null;
  maximumBytesRead?: number | null;
};

export type PageResult = {
  page: Doc[];
  isDone: boolean;
  continueCursor: string;
  splitCursor: string | null;
  pageStatus: "SplitRecommended" | "SplitRequired" | null;
};

/** How user code reached a document call: `ctx.db` or `ctx.db.system`. */
export type Access = "db" | "db.system";

/** Field names the library never sends but a forged syscall could (convex-backend
 *  rejects user fields that start with "_" at the top level). */
const SYSTEM_FIELDS = new Set(["_id", "_creationTime"]);
/**
 * The writes of one function call within a transaction.
 * - `readOnly`: a query (nested or not) may not write
 * - `committedOnly`: reads skip every pending write (`runQuery` with
 *   `useStaleSnapshot`), so ancestors' writes are hidden too
 */
export class WriteLayer {
  readonly writes = new Map<string, PendingWrite>();

  constructor(
    readonly parent: WriteLayer | null,
    readonly readOnly: boolean,
    readonly committedOnly = false,
  ) {}
}

export class Transaction {
  /** Tables this transaction read; a commit to any of them invalidates a query that ran here. */
  readonly readSet = new ReadSet();
  /** Reads and writes against Convex's per-transaction limits (`limits.ts`). */
  readonly usage: UsageMeter;
  readonly #db: Database;
  readonly #readOnly: boolean;
  /** The top-level function's writes; what `pendingWrites()` commits. */
  readonly root: WriteLayer;
  /** `db.commitCount` when the transaction began: its snapshot; null when optimistic. */
  #snapshot: number | null;
  /** The run read the snapshot timestamp, which every commit changes. */
  #readTimestamp = false;
  /** Where committed state is read: a pinned snapshot (`at`), or the latest. */
  readonly #committed: Database | ReadSnapshot;
  readonly #at: ReadSnapshot | null;
  /** A read at a snapshot went to the latest state instead (search, counts). */
  #readLatest = false;
  #closed = false;

  /**
   * - `unmetered`: the backend's own reads and writes, outside Convex's per-function limits
   * - `optimistic`: a query whose read set the caller validates against the
   *   commits made while it ran (read-only only)
   * - `at`: an optimistic query that reads this snapshot instead of the
   *   latest state, so commits landing meanwhile leave it consistent: its
   *   outcome is that of a run at `at.ts` (unless `readLatest`)
   */
  constructor(
    db: Database,
    options: {
      readOnly: boolean;
      unmetered?: boolean;
      optimistic?: boolean;
      at?: ReadSnapshot;
    },
  ) {
    if (options.optimistic === true && !options.readOnly)
      throw new Error("Only a read-only transaction can be optimistic");
    if (options.at !== undefined && options.optimistic !== true)
      throw new Error("Only an optimistic transaction reads at a snapshot");
    this.#at = options.at ?? null;
    this.#committed = options.at ?? db;
    this.usage = new UsageMeter(options.unmetered !== true);
    this.#db = db;
    this.#snapshot = options.optimistic === true ? null : db.commitCount;
    this.#readOnly = options.readOnly;
    this.root = new WriteLayer(null, options.readOnly);
  }

  /** `getSnapshotTs()`: the latest commit's timestamp, which the result then depends on. */
  snapshotTs(): bigint {
    this.#check();
    this.#readTimestamp = true;
    return this.#at?.ts ?? this.#db.lastTs;
  }

  /**
   * A run at a snapshot (`at`) read something snapshots do not cover (a
   * search index, a table count): its outcome holds at the snapshot only if
   * no commit landed since.
   */
  get readLatest(): boolean {
    return this.#readLatest;
  }

  /** Whether the run read something every commit changes (`snapshotTs`). */
  get readTimestamp(): boolean {
    return this.#readTimestamp;
  }

  close(): void {
    this.#closed = true;
  }

  /**
   * Makes a mutation's transaction optimistic: its run goes on outside the
   * writer slot, so commits may land under it, and the caller validates its
   * read set against them (commitLog.ts) before it commits.
   */
  release(): void {
    this.#snapshot = null;
  }

  // ---- nesting -----------------------------------------------------------

  /** A layer for a nested call made from `parent`; a nested query may not write. */
  child(
    parent: WriteLayer,
    kind: "query" | "mutation" | "snapshotQuery",
  ): WriteLayer {
    return new WriteLayer(
      parent,
      parent.readOnly || kind !== "mutation",
      kind === "snapshotQuery",
    );
  }

  /** A nested call succeeded: its writes become its parent's. */
  merge(layer: WriteLayer): void {
    if (layer.parent === null) throw new Error("The root layer has no parent");
    for (const [id, write] of layer.writes) layer.parent.writes.set(id, write);
    layer.writes.clear();
  }

  pendingWrites(): Map<string, PendingWrite> {
    return this.root.writes;
  }

  // ---- documents ---------------------------------------------------------

  /**
   * `db.get`. A malformed id or an id of another table than the one named
   * fail; an id of a table that does not exist reads as null (convex-backend
   * `query_batch` in crates/isolate `async_syscall.rs`). `access` is how user
   * code called it (`db` or `db.system`), which must match the id's table;
   * the backend's own modules (scheduler, file storage) leave it out.
   */
  get(
    id: string,
    tableName?: string,
    layer = this.root,
    access?: Access,
  ): Doc | null {
    this.#check();
    const table = this.#resolveId(id, tableName, "db.get", access);
    if (table === undefined) return null;
    this.readSet.addId(table.name, id);
    this.usage.readRange(`id:${id}`);
    const pending = this.#pending(id, layer);
    const doc =
      pending !== undefined ? pending.doc : this.#committed.getDocument(id);
    if (doc !== null) this.usage.readDocument(doc);
    return doc;
  }

  insert(
    tableName: string,
    value: Record<string, Value>,
    layer = this.root,
  ): string {
    this.#checkWrite(layer);
    if (tableName.startsWith("_")) {
      throw new Error(
        `System tables (prefixed with '_') are read-only: cannot insert into "${tableName}"`,
      );
    }
    checkUserFields(value);
    const table = this.#db.tableForWrite(tableName);
    const id = encodeId(table.number, newInternalId());
    const doc = {
      ...value,
      _id: id,
      _creationTime: this.#db.nextCreationTime(),
    } as Doc;
    this.#write(tableName, doc, layer, true);
    return id;
  }

  /**
   * Inserts into a system table (`_scheduled_functions`, `_cron_jobs`): the
   * backend's own bookkeeping, which commits with the transaction like any
   * write. User code cannot reach this; its writes to "_" tables are refused.
   */
  insertSystem(
    tableName: string,
    value: Record<string, Value>,
    layer = this.root,
  ): string {
    this.#checkWrite(layer);
    const table = this.#db.tableForWrite(tableName);
    const id = encodeId(table.number, newInternalId());
    const doc = {
      ...value,
      _id: id,
      _creationTime: this.#db.nextCreationTime(),
    } as Doc;
    layer.writes.set(id, { table: tableName, doc, inserted: true });
    return id;
  }

  /** Replaces or deletes (`null`) a system table document; see `insertSystem`. */
  writeSystem(
    tableName: string,
    id: string,
    doc: Doc | null,
    layer = this.root,
  ): void {
    this.#checkWrite(layer);
    layer.writes.set(id, { table: tableName, doc });
  }

  /** `db.patch`: shallow merge; a top-level `undefined` removes the field. */
  patch(
    id: string,
    value: Record<string, Value | undefined>,
    tableName?: string,
    layer = this.root,
    access?: Access,
  ): void {
    this.#checkWrite(layer);
    const { table, doc } = this.#existing(
      id,
      tableName,
      "Update",
      layer,
      access,
    );
    const next: Record<string, Value> = { ...doc };
    for (const [field, fieldValue] of Object.entries(value)) {
      if (SYSTEM_FIELDS.has(field)) {
        if (fieldValue !== undefined && !sameValue(fieldValue, doc[field])) {
          throw new Error(
            `Cannot change system field "${field}" of document ${id}`,
          );
        }
        continue;
      }
      if (fieldValue === undefined) delete next[field];
      else next[field] = fieldValue;
    }
    checkUserFields(withoutSystemFields(next));
    this.#write(table, next as Doc, layer);
  }

  replace(
    id: string,
    value: Record<string, Value>,
    tableName?: string,
    layer = this.root,
    access?: Access,
  ): void {
    this.#checkWrite(layer);
    const { table, doc } = this.#existing(
      id,
      tableName,
      "Replace",
      layer,
      access,
    );
    for (const field of SYSTEM_FIELDS) {
      if (field in value && !sameValue(value[field], doc[field])) {
        throw new Error(
          `Cannot change system field "${field}" of document ${id}`,
        );
      }
    }
    const fields = withoutSystemFields(value);
    checkUserFields(fields);
    this.#write(
      table,
      { ...fields, _id: doc._id, _creationTime: doc._creationTime },
      layer,
    );
  }

  delete(
    id: string,
    tableName?: string,
    layer = this.root,
    access?: Access,
  ): void {
    this.#checkWrite(layer);
    const { table } = this.#existing(id, tableName, "Delete", layer, access);
    this.usage.writeDocument(id, null);
    layer.writes.set(id, { table, doc: null });
  }

  normalizeId(tableName: string, idString: string): string | null {
    return this.#db.isIdOfTable(tableName, idString) ? idString : null;
  }

  count(tableName: string, layer = this.root): number {
    this.#check();
    this.readSet.addTable(tableName);
    if (this.#at !== null) this.#readLatest = true;
    const table = this.#db.table(tableName);
    let count = table?.count ?? 0;
    for (const [id, write] of this.#pendingFor(tableName, layer)) {
      const committed = this.#db.getDocument(id) !== null;
      if (committed && write === null) count--;
      if (!committed && write !== null) count++;
    }
    return count;
  }

  // ---- queries -----------------------------------------------------------

  /** The documents a query yields, lazily, after its filters and limits. */
  *stream(query: SerializedQuery, layer = this.root): Generator<Doc> {
    let remaining = Infinity;
    const limits = query.operators.filter(
      (op): op is { limit: number } => "limit" in op,
    );
    const filters = query.operators.filter(
      (op): op is { filter: JSONValue } => "filter" in op,
    );
    for (const { limit } of limits) remaining = Math.min(remaining, limit);
    if (remaining <= 0) return;
    for (const { doc } of this.#scan(query, layer)) {
      if (!filters.every(({ filter }) => filterMatches(filter, doc))) continue;
      yield doc;
      if (--remaining <= 0) return;
    }
  }

  /**
   * `paginate()`, as convex-backend `DatabaseSyscallsShared::query_page` and
   * `IndexRange::_next` (crates/isolate `async_syscall.rs`, crates/database
   * `query/index_range.rs`): the rows after `cursor`, up to `pageSize` matches;
   * or, with an end cursor (the caller's, or the subscription's journal), every
   * row up to and including it, so a re-run page keeps its boundary while rows
   * are inserted. Without an end cursor, `maximumRowsRead` and
   * `maximumBytesRead` end the page early with `SplitRequired`; a page that
   * read more than 3/4 of a limit, or returned over 6,144 rows, gets
   * `SplitRecommended`. Cursors carry a fingerprint of their query.
   */
  page(request: PageRequest, layer = this.root): PageResult {
    const steps = this.pageSteps(request, layer);
    for (;;) {
      const step = steps.next();
      if (step.done === true) return step.value;
    }
  }

  /**
   * `page`, pausing (a bare `yield`) after every PAGE_STEP_ROWS rows read, so
   * that a caller can spread a large page over several turns of the event
   * loop. Rows are read as the steps run: a commit between two steps is seen
   * by the later ones, and, as it lands in the read set, an optimistic run
   * is then found to conflict (functionRunner.ts).
   */
  *pageSteps(
    request: PageRequest,
    layer = this.root,
  ): Generator<void, PageResult> {
    const { query, pageSize, maximumRowsRead } = request;
    const maximumBytesRead = request.maximumBytesRead ?? null;
    if (pageSize === 0) {
      throw new Error("Must request at least 1 document while paginating");
    }
    if (maximumRowsRead === 0 || maximumBytesRead === 0) {
      throw new Error(
        "maximumRowsRead and maximumBytesRead must be greater than 0",
      );
    }
    if (query.operators.some((op) => "limit" in op)) {
      throw new Error("paginate() cannot be combined with take() or a limit");
    }
    // Search results are keyed by relevance, not by index fields (convex-backend
    // fingerprints search queries with an empty field list).
    const source =
      query.source.type === "Search"
        ? { keyFields: [], order: "asc" as const }
        : this.#resolveSource(query);
    const fingerprint = queryFingerprint(query, source.keyFields);
    const start =
      request.cursor === null
        ? null
        : decodeCursor(request.cursor, fingerprint);
    const end =
      request.endCursor === null
        ? null
        : decodeCursor(request.endCursor, fingerprint);
    const order = source.order;
    const filters = query.operators.filter(
      (op): op is { filter: JSONValue } => "filter" in op,
    );
    const page: Doc[] = [];
    const scannedKeys: Buffer[] = [];
    let rowsRead = 0;
    let bytesRead = 0;
    let position: CursorPosition | null = start;
    let splitRequired = false;
    if (start?.type !== "end") {
      // With an end cursor the whole interval must be read, so the limits
      // do not apply (`enforce_limits` in index_range.rs).
      const enforceLimits = end === null;
      const rows = this.#scan(query, layer, start?.key);
      for (;;) {
        if (end === null && page.length >= pageSize) break;
        if (
          enforceLimits &&
          maximumBytesRead !== null &&
          bytesRead >= maximumBytesRead
        ) {
          splitRequired = true;
          break;
        }
        const next = rows.next();
        if (
          next.done === true ||
          (end?.type === "after" && isPast(order, next.value.key, end.key))
        ) {
          position = end ?? { type: "end" };
          break;
        }
        if (
          enforceLimits &&
          maximumRowsRead !== null &&
          rowsRead >= maximumRowsRead
        ) {
          splitRequired = true;
          break;
        }
        const { key, doc, bytes } = next.value;
        if (++rowsRead % PAGE_STEP_ROWS === 0) yield;
        bytesRead += bytes;
        scannedKeys.push(key);
        position = { type: "after", key };
        if (filters.every(({ filter }) => filterMatches(filter, doc))) {
          page.push(doc);
        }
      }
    }
    const cursor: CursorPosition = end ?? position ?? { type: "end" };
    const approachingLimit =
      rowsRead >
        softLimit(Math.min(maximumRowsRead ?? Infinity, MAX_ROWS_READ)) ||
      bytesRead >
        softLimit(Math.min(maximumBytesRead ?? Infinity, MAX_BYTES_READ)) ||
      page.length > softLimit(MAX_PAGE_ROWS);
    return {
      page,
      isDone: cursor.type === "end",
      continueCursor: encodeCursor(fingerprint, cursor),
      splitCursor:
        scannedKeys.length > 2
          ? encodeCursor(fingerprint, {
              type: "after",
              key: scannedKeys[Math.floor(scannedKeys.length / 2)],
            })
          : null,
      pageStatus: splitRequired
        ? "SplitRequired"
        : approachingLimit
          ? "SplitRecommended"
          : null,
    };
  }

  /** Rows of the query's index range in order, committed rows merged with pending writes. */
  *#scan(
    query: SerializedQuery,
    layer: WriteLayer,
    after?: Buffer,
  ): Generator<{ key: Buffer; doc: Doc; bytes: number }> {
    this.#check();
    if (query.source.type === "Search") {
      yield* this.#searchScan(query.source, layer, after);
      return;
    }
    const source = this.#resolveSource(query);
    const { tableName, indexName, keyFields, order } = source;
    const interval = afterCursor(source.interval, order, after);
    const read = this.readSet.addScan(tableName, keyFields, interval, order);
    // A read past a cursor is a range of its own; the same query again is not.
    this.usage.readRange(
      `${JSON.stringify(query.source)}${after === undefined ? "" : `@${this.usage.rangesRead}`}`,
    );
    const pending = this.#pendingFor(tableName, layer);
    const added: { key: Buffer; doc: Doc; bytes: number }[] = [];
    for (const doc of pending.values()) {
      if (doc === null) continue;
      const key = encodeKey(indexKey(doc, keyFields));
      if (intervalContains(interval, key)) {
        added.push({ key, doc, bytes: documentBytes(doc) });
      }
    }
    const direction = order === "asc" ? 1 : -1;
    added.sort((a, b) => direction * compareKeyBytes(a.key, b.key));
    let next = 0;
    const emit = (row: { key: Buffer; doc: Doc; bytes: number }) => {
      this.usage.readDocument(row.doc);
      advance(read, row.key);
      return row;
    };
    const index = this.#db.table(tableName)?.queryable(indexName);
    if (index !== undefined) {
      for (const entry of this.#committed.scan(index, interval, order)) {
        this.#check();
        if (pending.has(entry.doc._id)) continue;
        while (
          next < added.length &&
          direction * compareKeyBytes(added[next].key, entry.key) < 0
        ) {
          yield emit(added[next++]);
        }
        yield emit(entry);
      }
    }
    while (next < added.length) yield emit(added[next++]);
    read.done = true;
  }

  /**
   * `withSearchIndex`: the on-disk index's best matches, with this call's
   * pending writes scored in, in relevance order. Each row's key is
   * `[-score, -_creationTime, _id]`, so pagination cursors work as for index
   * ranges (convex-backend keys search results the same way).
   */
  *#searchScan(
    source: Extract<SerializedQuery["source"], { type: "Search" }>,
    layer: WriteLayer,
    after?: Buffer,
  ): Generator<{ key: Buffer; doc: Doc; bytes: number }> {
    const dot = source.indexName.indexOf(".");
    const tableName = source.indexName.slice(0, dot);
    if (this.#at !== null) this.#readLatest = true;
    const lookup = this.#db.searchIndex(
      tableName,
      source.indexName.slice(dot + 1),
    );
    if (lookup.state === "staged")
      throw indexBackfillingError(source.indexName);
    if (dot <= 0 || lookup.state === "missing")
      throw new Error(`Index ${source.indexName} not found.`);
    const definition = lookup.index;
    const compiled = compileSearch(
      definition,
      source.filters as SerializedSearchFilter[],
    );
    this.readSet.addPredicate(tableName, (doc) =>
      searchCouldMatch(doc, definition.searchField, compiled),
    );
    if (compiled.terms.length === 0) return;
    const { hits, stats, terms } = this.#db.textSearch.search(
      definition,
      compiled,
    );
    const frequencies = new Map(terms.map((t) => [t.term, t.docFrequency]));
    const pending = this.#pendingFor(tableName, layer);
    const rows = hits.filter((hit) => !pending.has(hit.id));
    for (const doc of pending.values()) {
      if (doc === null) continue;
      const score = scoreDocument(
        doc,
        definition.searchField,
        compiled,
        stats,
        (term) => frequencies.get(term) ?? 0,
      );
      if (score > 0)
        rows.push({ id: doc._id, score, creationTime: doc._creationTime });
    }
    rows.sort(compareHits);
    for (const hit of rows.slice(0, MAX_CANDIDATE_REVISIONS)) {
      const key = encodeKey([-hit.score, -hit.creationTime, hit.id]);
      if (after !== undefined && compareKeyBytes(key, after) <= 0) continue;
      const doc = pending.has(hit.id)
        ? pending.get(hit.id)!
        : this.#committed.getDocument(hit.id);
      if (doc === null) continue;
      // Convex loads each result as a `db.get` would: a point read of `by_id`
      // and a document read, counted against the read limits as it is
      // reached (convex-backend `query/search_query.rs`
      // `SearchResultIterator::next`, `Transaction::get_inner`).
      this.usage.readRange(`id:${hit.id}`);
      this.usage.readDocument(doc);
      yield { key, doc, bytes: documentBytes(doc) };
    }
  }

  #resolveSource(query: SerializedQuery): {
    tableName: string;
    indexName: string;
    keyFields: string[];
    interval: KeyInterval;
    order: Order;
  } {
    const source = query.source;
    switch (source.type) {
      case "FullTableScan":
        return {
          tableName: source.tableName,
          indexName: BY_CREATION_TIME,
          keyFields: CREATION_TIME_KEY_FIELDS,
          interval: rangeToInterval(FULL_RANGE),
          order: source.order ?? "asc",
        };
      case "IndexRange": {
        const dot = source.indexName.indexOf(".");
        const tableName = source.indexName.slice(0, dot);
        const indexName = source.indexName.slice(dot + 1);
        const fields =
          dot <= 0 ? undefined : this.#db.indexFields(tableName, indexName);
        if (fields === undefined) {
          if (this.#db.isStagedIndex(tableName, indexName))
            throw indexBackfillingError(source.indexName);
          throw new Error(`Index ${source.indexName} not found.`);
        }
        const bounds = compileIndexRange(
          source.indexName,
          fields,
          source.range,
        );
        return {
          tableName,
          indexName,
          keyFields: keyFieldsOf(fields),
          interval: rangeToInterval(boundsToKeyRange(bounds)),
          order: source.order ?? "asc",
        };
      }
      case "Search":
        throw new Error("Search sources are scanned by #searchScan");
      default:
        source satisfies never;
        throw new Error(`Unknown query source ${JSON.stringify(source)}`);
    }
  }

  /**
   * The table an id names, checked as convex-backend checks the `id` argument
   * of a database syscall (`DeveloperDocumentId::decode`, `check_table_name`
   * in crates/isolate `environment/helpers/mod.rs`, `system_table_guard`), or
   * undefined when no such table exists.
   */
  #resolveId(
    id: string,
    tableName: string | undefined,
    syscall: "db.get" | "db.patch" | "db.replace" | "db.delete",
    access: Access | undefined,
  ): { name: string } | undefined {
    // The syscall's arguments are JSON, so `id` may not be a string at all.
    const parsed = parseId(String(id));
    if (parsed instanceof IdDecodeError) {
      throw new Error(
        `Invalid argument \`id\` for \`${syscall}\`: ${parsed.message}`,
      );
    }
    const table = this.#db.tableOfId(id);
    if (table === undefined) return undefined;
    if (tableName !== undefined && tableName !== table.name) {
      throw new Error(
        `Invalid argument \`id\` for \`${syscall}\`: expected to be an Id<"${tableName}">, got Id<"${table.name}"> instead.`,
      );
    }
    const systemTable = table.name.startsWith("_");
    if (systemTable && access === "db") {
      throw new Error("System tables can only be accessed with db.system.");
    }
    if (!systemTable && access === "db.system") {
      throw new Error("User tables cannot be accessed with db.system.");
    }
    return table;
  }

  #existing(
    id: string,
    tableName: string | undefined,
    op: "Update" | "Replace" | "Delete",
    layer: WriteLayer,
    access: Access | undefined,
  ): { table: string; doc: Doc } {
    const syscall =
      op === "Update"
        ? "db.patch"
        : op === "Replace"
          ? "db.replace"
          : "db.delete";
    const table = this.#resolveId(id, tableName, syscall, access);
    let doc: Doc | null = null;
    if (table !== undefined) {
      this.readSet.addId(table.name, id);
      const pending = this.#pending(id, layer);
      doc = pending !== undefined ? pending.doc : this.#db.getDocument(id);
    }
    if (doc === null) {
      throw new Error(`${op} on nonexistent document ID ${id}`);
    }
    return { table: this.#db.tableOfId(id)!.name, doc };
  }

  #write(
    tableName: string,
    doc: Doc,
    layer: WriteLayer,
    inserted = false,
  ): void {
    if (tableName.startsWith("_")) {
      throw new Error(
        `System tables (prefixed with '_') are read-only: cannot write to "${tableName}"`,
      );
    }
    checkDocument(doc);
    this.usage.writeDocument(doc._id, doc);
    this.#db.validateDocument(tableName, doc);
    // A later patch of an inserted document is still an insert to commit.
    const isNew = inserted || this.#pending(doc._id, layer)?.inserted === true;
    layer.writes.set(doc._id, { table: tableName, doc, inserted: isNew });
  }

  /** The layers a call sees, outermost first: its ancestors' and its own. */
  #visibleLayers(layer: WriteLayer): WriteLayer[] {
    const chain: WriteLayer[] = [];
    for (let l: WriteLayer | null = layer; l !== null; l = l.parent) {
      if (l.committedOnly) return [];
      chain.push(l);
    }
    return chain.reverse();
  }

  #pending(id: string, layer: WriteLayer): PendingWrite | undefined {
    let found: PendingWrite | undefined;
    for (const l of this.#visibleLayers(layer))
      found = l.writes.get(id) ?? found;
    return found;
  }

  /** The latest write this call can see to each document of a table (null = deleted). */
  #pendingFor(tableName: string, layer: WriteLayer): Map<string, Doc | null> {
    const result = new Map<string, Doc | null>();
    for (const l of this.#visibleLayers(layer)) {
      for (const [id, write] of l.writes) {
        if (write.table === tableName) result.set(id, write.doc);
      }
    }
    return result;
  }

  /** Throws once the transaction has finished (its function returned or timed out). */
  assertOpen(): void {
    this.#check();
  }

  #check(): void {
    if (this.#closed) {
      throw new Error(
        "This transaction has already finished (the function timed out or returned)",
      );
    }
    if (this.#snapshot !== null && this.#db.commitCount !== this.#snapshot) {
      throw new Error(
        "Internal error: a commit happened while this transaction was open; mutations must run on the writer executor",
      );
    }
  }

  #checkWrite(layer: WriteLayer): void {
    this.#check();
    if (this.#readOnly || layer.readOnly) {
      throw new Error(
        "Queries cannot write to the database: use a mutation to insert, patch, replace or delete documents",
      );
    }
  }
}

// ---- cursors ---------------------------------------------------------------
// A cursor is opaque to clients (convex-backend encrypts its cursors with the
// instance key): base64url of a version byte, the 16-byte fingerprint of the
// query it belongs to, and a position, "end" or "after this index key". A
// cursor from another query (another table, index, range, order or filter) is
// refused with convex-backend's `invalid_cursor()` text, which makes
// `usePaginatedQuery` start over (convex 1.48 `use_paginated_query.ts`).

const CURSOR_VERSION = 1;
const FINGERPRINT_BYTES = 16;
const POSITION_END = 0;
const POSITION_AFTER = 1;
/** Transaction read limits (Convex limits page: 32,000 documents scanned, 16 MiB read). */
const MAX_ROWS_READ = 32_000;
const MAX_BYTES_READ = 16 << 20;
/** Value::Array's 8,192 elements; over 3/4 of it a page should split (`SOFT_MAX_PAGE_LEN`). */
const MAX_PAGE_ROWS = 8192;

type CursorPosition = { type: "end" } | { type: "after"; key: Buffer };

const softLimit = (hard: number) => Math.floor((hard * 3) / 4);

/**
 * An index's key fields with the implicit suffix, made once per index: a
 * subscription's read set keeps the key fields of each scan, and a copy per
 * run was 0.2 KB of each subscription's heap. Never written to.
 */
const suffixedFields = new WeakMap<readonly string[], string[]>();
const CREATION_TIME_KEY_FIELDS = indexedFieldsWithSuffix(["_creationTime"]);

function keyFieldsOf(fields: readonly string[]): string[] {
  let suffixed = suffixedFields.get(fields);
  if (suffixed === undefined) {
    suffixed = indexedFieldsWithSuffix(fields);
    suffixedFields.set(fields, suffixed);
  }
  return suffixed;
}

/** What a cursor is tied to: the query's source, order, filters, and the index's fields. */
function queryFingerprint(query: SerializedQuery, keyFields: string[]): Buffer {
  return createHash("sha256")
    .update(
      JSON.stringify({
        source: query.source,
        operators: query.operators,
        keyFields,
      }),
    )
    .digest()
    .subarray(0, FINGERPRINT_BYTES);
}

function encodeCursor(fingerprint: Buffer, position: CursorPosition): string {
  const head = Buffer.from([CURSOR_VERSION]);
  const tail =
    position.type === "end"
      ? Buffer.from([POSITION_END])
      : Buffer.concat([Buffer.from([POSITION_AFTER]), position.key]);
  return Buffer.concat([head, fingerprint, tail]).toString("base64url");
}

function decodeCursor(cursor: string, fingerprint: Buffer): CursorPosition {
  const bytes = Buffer.from(cursor, "base64url");
  const kind = bytes[1 + FINGERPRINT_BYTES];
  if (
    bytes[0] !== CURSOR_VERSION ||
    bytes.toString("base64url") !== cursor ||
    !bytes.subarray(1, 1 + FINGERPRINT_BYTES).equals(fingerprint) ||
    (kind !== POSITION_END && kind !== POSITION_AFTER) ||
    (kind === POSITION_END && bytes.length !== 2 + FINGERPRINT_BYTES)
  ) {
    throw invalidCursor();
  }
  return kind === POSITION_END
    ? { type: "end" }
    : { type: "after", key: bytes.subarray(2 + FINGERPRINT_BYTES) };
}

/** A staged index is never enabled, so Convex answers as for one still
 *  backfilling (convex-backend `index_registry.rs` `index_backfilling_error`). */
export function indexBackfillingError(printableName: string): Error {
  return new Error(
    `Index ${printableName} is currently backfilling and not available to query yet.`,
  );
}

/** convex-backend `crates/database/src/query/mod.rs` `invalid_cursor()`. */
function invalidCursor(): Error {
  return new Error(
    "InvalidCursor: Tried to run a query starting from a cursor, but it looks like this cursor is from a different query.",
  );
}

/** A document's size as the read limits count it. */
function documentBytes(doc: Doc): number {
  return JSON.stringify(convexToJson(doc)).length;
}

// ---- values ----------------------------------------------------------------

function withoutSystemFields(
  value: Record<string, Value>,
): Record<string, Value> {
  const { _id: _ignoredId, _creationTime: _ignoredTime, ...fields } = value;
  return fields;
}

function checkUserFields(value: Record<string, Value | undefined>): void {
  for (const field of Object.keys(value)) {
    if (field.startsWith("_")) {
      throw new Error(
        `Field '${field}' starts with an underscore, which is only allowed for system fields like '_id'`,
      );
    }
  }
}

function sameValue(a: Value, b: Value | undefined): boolean {
  return (
    b !== undefined &&
    JSON.stringify(convexToJson(a)) === JSON.stringify(convexToJson(b))
  );
}
