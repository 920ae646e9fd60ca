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
 * Transactions are not concurrent: the executor runs one function at a time, so
 * committed state cannot change under an open transaction (serializable by
 * construction).
 */
import {
  convexToJson,
  jsonToConvex,
  type JSONValue,
  type Value,
} from "convex/values";
import { filterMatches } from "../query/filter.ts";
import {
  boundsToKeyRange,
  compareKeys,
  compileIndexRange,
  type IndexKey,
  indexKey,
  indexedFieldsWithSuffix,
  type IndexRangeExpr,
  type KeyRange,
  keyInRange,
  type Order,
} from "../query/indexRange.ts";
import { BY_CREATION_TIME, FULL_RANGE } from "../storage/memoryTables.ts";
import type { Doc } from "../values/wire.ts";
import type { Database, PendingWrite } from "../storage/database.ts";
import { encodeId, newInternalId } from "../values/ids.ts";
import { ReadSet } from "../query/readSet.ts";
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

export type PageRequest = {
  query: SerializedQuery;
  cursor: string | null;
  endCursor: string | null;
  pageSize: number;
  maximumRowsRead: number | null;
};

export type PageResult = {
  page: Doc[];
  isDone: boolean;
  continueCursor: string;
  splitCursor: string | null;
  pageStatus: "SplitRecommended" | "SplitRequired" | null;
};

/** Field names the library never sends but a forged syscall could (convex-backend
 *  rejects user fields that start with "_" at the top level). */
const SYSTEM_FIELDS = new Set(["_id", "_creationTime"]);
const MAX_DOCUMENT_BYTES = 1 << 20;

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
  readonly #db: Database;
  readonly #readOnly: boolean;
  /** The top-level function's writes; what `pendingWrites()` commits. */
  readonly root: WriteLayer;
  #closed = false;

  constructor(db: Database, options: { readOnly: boolean }) {
    this.#db = db;
    this.#readOnly = options.readOnly;
    this.root = new WriteLayer(null, options.readOnly);
  }

  close(): void {
    this.#closed = true;
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

  get(id: string, tableName?: string, layer = this.root): Doc | null {
    this.#check();
    const table = this.#db.tableOfId(id);
    if (table === undefined) return null;
    if (tableName !== undefined && table.name !== tableName) return null;
    this.readSet.addId(table.name, id);
    const pending = this.#pending(id, layer);
    if (pending !== undefined) return pending.doc;
    return table.docs.get(id) ?? null;
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
    this.#write(tableName, doc, layer);
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
    layer.writes.set(id, { table: tableName, doc });
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
  ): void {
    this.#checkWrite(layer);
    const { table, doc } = this.#existing(id, tableName, "Update", layer);
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
  ): void {
    this.#checkWrite(layer);
    const { table, doc } = this.#existing(id, tableName, "Replace", layer);
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

  delete(id: string, tableName?: string, layer = this.root): void {
    this.#checkWrite(layer);
    const { table } = this.#existing(id, tableName, "Delete", layer);
    layer.writes.set(id, { table, doc: null });
  }

  normalizeId(tableName: string, idString: string): string | null {
    return this.#db.isIdOfTable(tableName, idString) ? idString : null;
  }

  count(tableName: string, layer = this.root): number {
    this.#check();
    this.readSet.addTable(tableName);
    const table = this.#db.table(tableName);
    let count = table?.docs.size ?? 0;
    for (const [id, write] of this.#pendingFor(tableName, layer)) {
      const committed = table?.docs.has(id) ?? false;
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
   * `paginate()`: the rows after `cursor`, up to `pageSize` matches, or, when an
   * end cursor is given (by the caller or by the subscription's journal), every
   * row up to and including it, so a re-run page keeps its boundary while rows
   * are inserted (convex-backend `query_journal.rs`).
   */
  page(request: PageRequest, layer = this.root): PageResult {
    const { query, pageSize, maximumRowsRead } = request;
    if (query.operators.some((op) => "limit" in op)) {
      throw new Error("paginate() cannot be combined with take() or a limit");
    }
    const indexName = sourceIndexName(query);
    const after =
      request.cursor === null
        ? undefined
        : decodeCursor(request.cursor, indexName);
    if (after === "end") {
      return {
        page: [],
        isDone: true,
        continueCursor: encodeEndCursor(indexName),
        splitCursor: null,
        pageStatus: null,
      };
    }
    const end =
      request.endCursor === null
        ? undefined
        : decodeCursor(request.endCursor, indexName);
    const order =
      query.source.type === "Search" ? "asc" : (query.source.order ?? "asc");
    const filters = query.operators.filter(
      (op): op is { filter: JSONValue } => "filter" in op,
    );
    const page: Doc[] = [];
    const pageKeys: IndexKey[] = [];
    let scanned = 0;
    for (const { key, doc } of this.#scan(query, layer, after)) {
      if (end !== undefined && end !== "end") {
        const c = compareKeys(key, end);
        if (order === "asc" ? c > 0 : c < 0) {
          return pageResult(
            indexName,
            page,
            pageKeys,
            request.endCursor!,
            false,
          );
        }
      }
      scanned++;
      if (filters.every(({ filter }) => filterMatches(filter, doc))) {
        page.push(doc);
        pageKeys.push(key);
      }
      if (end === undefined && page.length >= pageSize) {
        return pageResult(
          indexName,
          page,
          pageKeys,
          encodeCursor(indexName, key),
          false,
        );
      }
      if (end !== undefined && end !== "end" && compareKeys(key, end) === 0) {
        return pageResult(indexName, page, pageKeys, request.endCursor!, false);
      }
      if (maximumRowsRead !== null && scanned >= maximumRowsRead) {
        const cursor = encodeCursor(indexName, key);
        if (end === undefined) {
          // No boundary to keep: the page just ends early.
          return pageResult(indexName, page, pageKeys, cursor, false);
        }
        // The page must keep its end (the journal pins it), so it is returned
        // incomplete: the client splits it at the scan position and reads
        // (cursor, split] and (split, end] separately (`SplitRequired`).
        return {
          page,
          isDone: false,
          continueCursor: request.endCursor!,
          splitCursor: cursor,
          pageStatus: "SplitRequired",
        };
      }
    }
    if (end !== undefined && end !== "end") {
      return pageResult(indexName, page, pageKeys, request.endCursor!, false);
    }
    return pageResult(
      indexName,
      page,
      pageKeys,
      encodeEndCursor(indexName),
      true,
    );
  }

  /** Rows of the query's index range in order, committed rows merged with pending writes. */
  *#scan(
    query: SerializedQuery,
    layer: WriteLayer,
    after?: IndexKey,
  ): Generator<{ key: IndexKey; doc: Doc }> {
    this.#check();
    if (query.source.type === "Search") {
      yield* this.#searchScan(query.source, layer, after);
      return;
    }
    const { tableName, indexName, keyFields, range, order } =
      this.#resolveSource(query);
    const read = this.readSet.addScan(
      tableName,
      keyFields,
      range,
      order,
      after,
    );
    const table = this.#db.table(tableName);
    const pending = this.#pendingFor(tableName, layer);
    const inRange = (key: IndexKey) =>
      keyInRange(key, range) &&
      (after === undefined ||
        (order === "asc"
          ? compareKeys(key, after) > 0
          : compareKeys(key, after) < 0));
    const added: { key: IndexKey; doc: Doc }[] = [];
    for (const doc of pending.values()) {
      if (doc === null) continue;
      const key = indexKey(doc, keyFields);
      if (inRange(key)) added.push({ key, doc });
    }
    const direction = order === "asc" ? 1 : -1;
    added.sort((a, b) => direction * compareKeys(a.key, b.key));
    let next = 0;
    const emit = (row: { key: IndexKey; doc: Doc }) => {
      read.lastKey = row.key;
      return row;
    };
    const index = table?.indexes.get(indexName);
    if (index !== undefined) {
      for (const entry of index.scan(range, order, after)) {
        if (pending.has(entry.id)) continue;
        while (
          next < added.length &&
          direction * compareKeys(added[next].key, entry.key) < 0
        ) {
          yield emit(added[next++]);
        }
        yield emit({ key: entry.key, doc: table!.docs.get(entry.id)! });
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
    after?: IndexKey,
  ): Generator<{ key: IndexKey; doc: Doc }> {
    const dot = source.indexName.indexOf(".");
    const tableName = source.indexName.slice(0, dot);
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
    const table = this.#db.table(tableName);
    for (const hit of rows.slice(0, MAX_CANDIDATE_REVISIONS)) {
      const key: IndexKey = [-hit.score, -hit.creationTime, hit.id];
      if (after !== undefined && compareKeys(key, after) <= 0) continue;
      const doc = pending.get(hit.id) ?? table?.docs.get(hit.id);
      if (doc !== undefined && doc !== null) yield { key, doc };
    }
  }

  #resolveSource(query: SerializedQuery): {
    tableName: string;
    indexName: string;
    keyFields: string[];
    range: KeyRange;
    order: Order;
  } {
    const source = query.source;
    switch (source.type) {
      case "FullTableScan":
        return {
          tableName: source.tableName,
          indexName: BY_CREATION_TIME,
          keyFields: indexedFieldsWithSuffix(["_creationTime"]),
          range: FULL_RANGE,
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
          keyFields: indexedFieldsWithSuffix(fields),
          range: boundsToKeyRange(bounds),
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

  #existing(
    id: string,
    tableName: string | undefined,
    op: "Update" | "Replace" | "Delete",
    layer: WriteLayer,
  ): { table: string; doc: Doc } {
    const doc = this.get(id, tableName, layer);
    if (doc === null) {
      throw new Error(`${op} on nonexistent document ID ${id}`);
    }
    return { table: this.#db.tableOfId(id)!.name, doc };
  }

  #write(tableName: string, doc: Doc, layer: WriteLayer): void {
    if (tableName.startsWith("_")) {
      throw new Error(
        `System tables (prefixed with '_') are read-only: cannot write to "${tableName}"`,
      );
    }
    const bytes = JSON.stringify(convexToJson(doc)).length;
    if (bytes > MAX_DOCUMENT_BYTES) {
      throw new Error(
        `Document is too large (${bytes} bytes; the limit is ${MAX_DOCUMENT_BYTES} bytes)`,
      );
    }
    this.#db.validateDocument(tableName, doc);
    layer.writes.set(doc._id, { table: tableName, doc });
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

function pageResult(
  indexName: string,
  page: Doc[],
  keys: IndexKey[],
  continueCursor: string,
  isDone: boolean,
): PageResult {
  // The client splits a page that grew past twice its size at this cursor
  // (convex 1.48 `paginated_query_client.ts`), keeping both halves gapless.
  const splitCursor =
    keys.length >= 2
      ? encodeCursor(indexName, keys[Math.floor(keys.length / 2) - 1])
      : null;
  return { page, isDone, continueCursor, splitCursor, pageStatus: null };
}

function sourceIndexName(query: SerializedQuery): string {
  const source = query.source;
  return source.type === "FullTableScan"
    ? `${source.tableName}.${BY_CREATION_TIME}`
    : source.indexName;
}

// ---- cursors ---------------------------------------------------------------
// A cursor is JSON `{i: indexName, k: key}` (or `{i, end: true}` past the last
// row). It names its index so that a cursor from another query is refused with
// "InvalidCursor", which makes `usePaginatedQuery` start over (convex 1.48
// `use_paginated_query.ts`).

function encodeCursor(indexName: string, key: IndexKey): string {
  return JSON.stringify({
    i: indexName,
    k: key.map((v) =>
      v === undefined ? { $undefined: null } : convexToJson(v),
    ),
  });
}

function encodeEndCursor(indexName: string): string {
  return JSON.stringify({ i: indexName, end: true });
}

function decodeCursor(cursor: string, indexName: string): IndexKey | "end" {
  let parsed: { i?: unknown; k?: unknown; end?: unknown };
  try {
    parsed = JSON.parse(cursor) as typeof parsed;
  } catch {
    throw invalidCursor("it is not a cursor this backend issued");
  }
  if (parsed.i !== indexName) {
    throw invalidCursor(
      `it belongs to a query on ${String(parsed.i)}, not ${indexName}`,
    );
  }
  if (parsed.end === true) return "end";
  if (!Array.isArray(parsed.k)) throw invalidCursor("it is malformed");
  return parsed.k.map((v: JSONValue) =>
    v !== null &&
    typeof v === "object" &&
    !Array.isArray(v) &&
    "$undefined" in v
      ? undefined
      : jsonToConvex(v),
  );
}

/** A staged index is never enabled, so Convex answers as for one still
 *  backfilling (convex-backend `index_registry.rs` `index_backfilling_error`). */
export function indexBackfillingError(printableName: string): Error {
  return new Error(
    `Index ${printableName} is currently backfilling and not available to query yet.`,
  );
}

function invalidCursor(reason: string): Error {
  return new Error(
    `InvalidCursor: this cursor cannot be used with this query because ${reason}`,
  );
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
        `Field name "${field}" is reserved: top-level fields starting with "_" are system fields`,
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
