/**
 * The database: committed documents in memory (memoryTables.ts), written through
 * to SQLite (sqliteStore.ts), with the table-number registry, the schema, and
 * the clocks for commit timestamps and `_creationTime`.
 *
 * `commit()` is the only place committed state changes. It runs synchronously:
 * SQLite first (fsynced), then memory, then the commit listeners that drive
 * subscription invalidation.
 *
 * Usage:
 *   const db = Database.open(dataDir);
 *   db.setSchema(schemaJson);                 // after each successful build
 *   const { ts } = db.commit(tx.pendingWrites(), sessionRequest);
 */
import fs from "node:fs";
import path from "node:path";
import { convexToJson, type JSONValue, jsonToConvex } from "convex/values";
import type { ValidatorJSON } from "convex/values";
import { decodeId, FIRST_USER_TABLE_NUMBER } from "../values/ids.ts";
import { type Doc, resolveCommitTs } from "../values/wire.ts";
import { validateValue } from "../values/validators.ts";
import type { SearchIndexDefinition } from "../query/textSearch.ts";
import { indexedFieldsWithSuffix } from "../query/indexRange.ts";
import type { DocumentChange } from "../query/readSet.ts";
import {
  BY_CREATION_TIME,
  BY_ID,
  type IndexDefinition,
  Table,
} from "./memoryTables.ts";
import {
  type DocumentWrite,
  type SessionRequestRecord,
  SqliteStore,
  type StoredTable,
} from "./sqliteStore.ts";
import { SearchIndexes } from "./searchIndex.ts";
import { type VectorIndexDefinition, VectorIndexes } from "./vectorIndex.ts";

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

/** How an index name resolves: Convex serves only enabled indexes, and a staged one is "backfilling". */
export type IndexLookup<T> =
  { state: "enabled"; index: T } | { state: "staged" } | { state: "missing" };

/** System tables have fixed numbers below the user range (convex-backend reserves 1..10000). */
const SYSTEM_TABLES: Record<string, number> = {
  _scheduled_functions: 1,
  _storage: 2,
  _cron_jobs: 3,
};

/**
 * System tables' own indexes, beside the built-in two. The scheduler finds the
 * next due job by `state.kind, scheduledTime` (convex-backend
 * `model/scheduled_jobs/mod.rs` indexes `_scheduled_jobs` by `nextTs` for the same
 * purpose), and garbage-collects finished jobs by `completedTime`.
 */
const SYSTEM_INDEXES: Record<string, SchemaJson["tables"][number]["indexes"]> =
  {
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

export type PendingWrite = { table: string; doc: Doc | null };

export type CommitResult = {
  ts: bigint;
  tables: Set<string>;
  /** Each written document before and after, for precise invalidation. */
  changes: DocumentChange[];
};

export type CommitListener = (result: CommitResult) => void;

export class SchemaViolationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SchemaViolationError";
  }
}

export class Database {
  readonly #store: SqliteStore;
  readonly #tablesByName = new Map<string, Table>();
  readonly #tablesByNumber = new Map<number, Table>();
  /** Tables named by a transaction but not yet written to SQLite. A table is
   *  persisted with the first commit after it was named; a rolled-back
   *  transaction only leaves an empty table behind, as in Convex. */
  readonly #unpersistedTables: StoredTable[] = [];
  readonly #listeners = new Set<CommitListener>();
  /** id → table number (0 for strings that are not IDs); see `tableOfId`. */
  readonly #idTableNumbers = new Map<string, number>();
  #schema: SchemaJson | null = null;
  #lastTs: bigint;
  #lastCreationTime = 0;
  #nextTableNumber = FIRST_USER_TABLE_NUMBER;
  /** Text and vector search indexes: tables in the same SQLite file, kept up
   *  to date inside each commit's transaction (storage/searchIndex.ts,
   *  storage/vectorIndex.ts). */
  readonly textSearch: SearchIndexes;
  readonly vectorSearch: VectorIndexes;

  private constructor(store: SqliteStore) {
    this.#store = store;
    this.textSearch = new SearchIndexes(store.connection);
    this.vectorSearch = new VectorIndexes(store.connection);
    const loaded = store.load();
    this.#lastTs = loaded.lastTs;
    for (const { name, number } of loaded.tables) {
      this.#addTable(name, number);
    }
    // System tables are never persisted as rows of `tables`, yet their
    // documents are (`_storage`), so they must exist before documents load.
    for (const [name, number] of Object.entries(SYSTEM_TABLES)) {
      if (!this.#tablesByName.has(name)) this.#addTable(name, number);
    }
    for (const stored of loaded.documents) {
      const table = this.#tablesByNumber.get(stored.tableNumber);
      if (table === undefined) {
        throw new Error(
          `Document ${stored.id} names unknown table number ${stored.tableNumber}`,
        );
      }
      const doc = jsonToConvex(JSON.parse(stored.json) as JSONValue) as Doc;
      table.docs.set(doc._id, doc);
      this.#lastCreationTime = Math.max(
        this.#lastCreationTime,
        doc._creationTime,
      );
    }
    for (const table of this.#tablesByName.values())
      table.setIndexes(this.#indexesFor(table.name));
  }

  /** Opens the database in `dataDir`, creating the directory and file if needed. */
  static open(dataDir: string): Database {
    fs.mkdirSync(dataDir, { recursive: true });
    return new Database(SqliteStore.open(path.join(dataDir, "db.sqlite3")));
  }

  close(): void {
    this.#store.close();
  }

  get lastTs(): bigint {
    return this.#lastTs;
  }

  get schema(): SchemaJson | null {
    return this.#schema;
  }

  onCommit(listener: CommitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Installs a new schema: rebuilds indexes and, when schema validation is on,
   * checks every existing document first. A violation leaves the old schema in
   * place and throws, as the real backend refuses such a push.
   */
  setSchema(schema: SchemaJson | null): void {
    if (schema !== null && schema.schemaValidation) {
      for (const tableSchema of schema.tables) {
        const table = this.#tablesByName.get(tableSchema.tableName);
        if (table === undefined) continue;
        for (const doc of table.docs.values()) {
          const error = this.#validateAgainst(tableSchema.documentType, doc);
          if (error !== null) {
            throw new SchemaViolationError(
              `Schema validation failed: document ${doc._id} in table "${tableSchema.tableName}" does not match the schema: ${error}`,
            );
          }
        }
      }
    }
    this.#schema = schema;
    for (const table of this.#tablesByName.values()) {
      table.setIndexes(this.#indexesFor(table.name));
    }
    const docsOf = (name: string) =>
      this.#tablesByName.get(name)?.docs.values() ?? [];
    const tables = schema?.tables ?? [];
    this.textSearch.setSchema(
      tables.flatMap((t) =>
        (t.searchIndexes ?? []).map((i) => searchDefinition(t.tableName, i)),
      ),
      docsOf,
    );
    this.vectorSearch.setSchema(
      tables.flatMap((t) =>
        (t.vectorIndexes ?? []).map((i) => vectorDefinition(t.tableName, i)),
      ),
      docsOf,
    );
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
    if (found !== undefined)
      return { state: "enabled", index: searchDefinition(tableName, found) };
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
    if (found !== undefined)
      return { state: "enabled", index: vectorDefinition(tableName, found) };
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

  table(name: string): Table | undefined {
    return this.#tablesByName.get(name);
  }

  /** The table for `name`, registering a new user table if there is none yet. */
  tableForWrite(name: string): Table {
    const existing = this.#tablesByName.get(name);
    if (existing !== undefined) return existing;
    const number = this.#nextTableNumber;
    const table = this.#addTable(name, number);
    table.setIndexes(this.#indexesFor(name));
    this.#unpersistedTables.push({ name, number });
    return table;
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
    if (indexName === BY_ID) return ["_id"];
    if (indexName === BY_CREATION_TIME) return ["_creationTime"];
    return this.#declaredIndexes(tableName).find(
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

  /**
   * Commits a transaction's writes (and the de-duplication record of the
   * mutation that made them) durably, then applies them in memory and tells
   * the listeners which tables changed.
   */
  commit(
    writes: Map<string, PendingWrite>,
    sessionRequest?: SessionRequestRecord,
  ): CommitResult {
    const ts = this.#nextTs();
    const documentWrites: DocumentWrite[] = [];
    const tables = new Set<string>();
    for (const write of writes.values()) {
      if (write.doc !== null) write.doc = resolveCommitTs(write.doc, ts);
    }
    for (const [id, write] of writes) {
      const table = this.tableForWrite(write.table);
      tables.add(write.table);
      documentWrites.push({
        id,
        tableNumber: table.number,
        json:
          write.doc === null ? null : JSON.stringify(convexToJson(write.doc)),
      });
    }
    const changes: DocumentChange[] = [];
    for (const [id, write] of writes) {
      changes.push({
        table: write.table,
        id,
        before: this.#tablesByName.get(write.table)!.docs.get(id) ?? null,
        after: write.doc,
      });
    }
    this.#store.commit({
      ts,
      newTables: this.#unpersistedTables,
      writes: documentWrites,
      sessionRequest,
      // Search index entries commit with their documents, or not at all.
      inTransaction: () => {
        this.textSearch.apply(changes);
        this.vectorSearch.apply(changes);
      },
    });
    this.#unpersistedTables.length = 0;
    this.#lastTs = ts;
    for (const change of changes) {
      const table = this.#tablesByName.get(change.table)!;
      if (change.after === null) table.delete(change.id);
      else table.put(change.after);
    }
    const result = { ts, tables, changes };
    for (const listener of this.#listeners) listener(result);
    return result;
  }

  #nextTs(): bigint {
    const now = BigInt(Date.now()) * 1_000_000n;
    return now > this.#lastTs ? now : this.#lastTs + 1n;
  }

  #addTable(name: string, number: number): Table {
    const table = new Table(name, number);
    this.#tablesByName.set(name, table);
    this.#tablesByNumber.set(number, table);
    if (number >= this.#nextTableNumber) this.#nextTableNumber = number + 1;
    return table;
  }

  #schemaTable(tableName: string): SchemaJson["tables"][number] | undefined {
    return this.#schema?.tables.find((t) => t.tableName === tableName);
  }

  #declaredIndexes(tableName: string): SchemaJson["tables"][number]["indexes"] {
    // A component's system table ("_scheduled_functions@child") has the
    // indexes of the app's.
    const system = tableName.startsWith("_")
      ? SYSTEM_INDEXES[tableName.split("@")[0]]
      : undefined;
    return system ?? this.#schemaTable(tableName)?.indexes ?? [];
  }

  #indexesFor(tableName: string): IndexDefinition[] {
    const declared = [
      { name: BY_ID, fields: ["_id"] },
      { name: BY_CREATION_TIME, fields: ["_creationTime"] },
      ...this.#declaredIndexes(tableName).map((i) => ({
        name: i.indexDescriptor,
        fields: i.fields,
      })),
    ];
    return declared.map(({ name, fields }) => ({
      name,
      keyFields: indexedFieldsWithSuffix(fields),
    }));
  }

  #validateAgainst(documentType: ValidatorJSON, doc: Doc): string | null {
    const { _id: _ignoredId, _creationTime: _ignoredTime, ...fields } = doc;
    return validateValue(documentType, fields, {
      tableNameOfId: (id) => this.tableOfId(id)?.name ?? null,
    });
  }
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
