/**
 * Vector indexes on disk: one row per indexed document (its vector as
 * float32, as Convex stores it, and its filter values) in a SQLite table of
 * the database file, maintained inside each commit's SQLite transaction and
 * backfilled from the table, resumably, when an index is added or changed
 * (derivedIndexes.ts).
 *
 * Search is exact: every row of the index is scored by cosine similarity
 * (vectors normalized, then a dot product, as qdrant's `CosineMetric`), so
 * results equal a brute-force reference. A document is indexed only when its
 * vector field is an array of exactly `dimensions` float64s (convex-backend
 * `qdrant_index.rs` `QdrantSchema::index`).
 *
 * Usage:
 *   const vectors = new VectorIndexes(connection);
 *   yield* vectors.prepare(definitions, docsAfter);  // while a schema is readied
 *   vectors.setSchema(definitions, docsAfter);       // at install
 *   vectors.apply(changes);   // inside the commit transaction
 *   vectors.search(definition, vector, 10, conditions);
 */
import type BetterSqlite3 from "better-sqlite3";
import { convexToJson, jsonToConvex, type JSONValue } from "convex/values";
import type { Value } from "convex/values";
import type { DocumentChange } from "../query/readSet.ts";
import { compareKeys, indexKey } from "../query/indexRange.ts";
import type { Doc } from "../values/wire.ts";
import {
  type BackfillProgress,
  DerivedIndexes,
  derivedIndexKey as keyOf,
  type DocumentsAfter,
  PAGE_ROWS,
  pages,
} from "./derivedIndexes.ts";

export type VectorIndexDefinition = {
  table: string;
  name: string;
  vectorField: string;
  dimensions: number;
  filterFields: string[];
};

/** One filter field and the values it may take (`q.eq`, or several under `q.or`). */
export type VectorFilterCondition = {
  field: string;
  values: (Value | undefined)[];
};

export type VectorHit = { id: string; score: number };

export class VectorIndexes {
  readonly #stmt: ReturnType<typeof prepare>;
  readonly #derived: DerivedIndexes<VectorIndexDefinition>;

  constructor(db: BetterSqlite3.Database) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS vector_indexes (
        key TEXT PRIMARY KEY,
        definition TEXT NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS vector_entries (
        key TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        vector BLOB NOT NULL,
        filters TEXT NOT NULL,
        PRIMARY KEY (key, doc_id)
      ) WITHOUT ROWID;
    `);
    this.#stmt = prepare(db);
    this.#derived = new DerivedIndexes<VectorIndexDefinition>(db, "vector", {
      keyOf,
      stored: () =>
        this.#stmt.listIndexes.all() as { key: string; definition: string }[],
      drop: (key) => {
        this.#stmt.dropEntries.run(key);
        this.#stmt.dropIndex.run(key);
      },
      put: (key, definition) => this.#stmt.putIndex.run(key, definition),
      insert: (definition, doc) => this.#insert(definition, doc),
      remove: (definition, doc) =>
        this.#stmt.deleteEntry.run(keyOf(definition), doc._id),
    });
  }

  /** Backfills the declared indexes a step per yield, while a schema is readied (derivedIndexes.ts). */
  prepare(
    definitions: readonly VectorIndexDefinition[],
    docsAfter: DocumentsAfter,
    progress?: BackfillProgress,
  ): Generator<void, void> {
    return this.#derived.prepare(definitions, docsAfter, progress);
  }

  /** Installs the schema's indexes: drops undeclared ones, finishes the others in slices. */
  setSchema(
    definitions: readonly VectorIndexDefinition[],
    docsAfter: DocumentsAfter,
  ): void {
    this.#derived.setSchema(definitions, docsAfter);
  }

  /** False while the index is still backfilling: queries on it fail as Convex's do. */
  isReady(definition: VectorIndexDefinition): boolean {
    return this.#derived.isReady(definition);
  }

  close(): void {
    this.#derived.close();
  }

  /** Applies a commit's document changes; call inside its SQLite transaction. */
  /** Whether a commit that changed these tables keeps one of these indexes. */
  maintains(tables: ReadonlySet<string>): boolean {
    return this.#derived.maintains(tables);
  }

  apply(changes: readonly DocumentChange[]): void {
    this.#derived.apply(changes);
  }

  /**
   * The `limit` documents most similar to `vector` among those matching any
   * condition (all documents when there are none), best first.
   */
  search(
    definition: VectorIndexDefinition,
    vector: readonly number[],
    limit: number,
    conditions: readonly VectorFilterCondition[],
  ): VectorHit[] {
    const query = normalize(Float32Array.from(vector));
    const best: VectorHit[] = [];
    if (limit <= 0) return best;
    const key = keyOf(definition);
    for (const row of pages(
      (after) =>
        this.#stmt.entries.all(key, after, PAGE_ROWS) as {
          doc_id: string;
          vector: Buffer;
          filters: string;
        }[],
      (row) => row.doc_id,
    )) {
      if (
        conditions.length > 0 &&
        !anyConditionMatches(definition, row.filters, conditions)
      )
        continue;
      // A copy: SQLite's buffer need not be 4-byte aligned.
      const stored = new Float32Array(
        row.vector.buffer.slice(
          row.vector.byteOffset,
          row.vector.byteOffset + row.vector.byteLength,
        ),
      );
      const hit = { id: row.doc_id, score: Math.fround(dot(query, stored)) };
      if (best.length === limit && compareVectorHits(hit, best[limit - 1]) >= 0)
        continue;
      let at = best.length;
      while (at > 0 && compareVectorHits(hit, best[at - 1]) < 0) at--;
      best.splice(at, 0, hit);
      if (best.length > limit) best.pop();
    }
    return best;
  }

  #insert(definition: VectorIndexDefinition, doc: Doc): void {
    const value = indexKey(doc, [definition.vectorField])[0];
    if (!Array.isArray(value) || value.length !== definition.dimensions) return;
    if (!value.every((x) => typeof x === "number")) return;
    const vector = normalize(Float32Array.from(value));
    this.#stmt.putEntry.run(
      keyOf(definition),
      doc._id,
      Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength),
      JSON.stringify(
        indexKey(doc, definition.filterFields).map((v) =>
          v === undefined ? { $undefined: null } : convexToJson(v),
        ),
      ),
    );
  }
}

function prepare(db: BetterSqlite3.Database) {
  return {
    listIndexes: db.prepare("SELECT key, definition FROM vector_indexes"),
    putIndex: db.prepare(
      "INSERT INTO vector_indexes (key, definition) VALUES (?, ?)",
    ),
    dropIndex: db.prepare("DELETE FROM vector_indexes WHERE key = ?"),
    dropEntries: db.prepare("DELETE FROM vector_entries WHERE key = ?"),
    putEntry: db.prepare(
      "INSERT INTO vector_entries (key, doc_id, vector, filters) VALUES (?, ?, ?, ?)",
    ),
    deleteEntry: db.prepare(
      "DELETE FROM vector_entries WHERE key = ? AND doc_id = ?",
    ),
    entries: db.prepare(
      "SELECT doc_id, vector, filters FROM vector_entries WHERE key = ? AND doc_id > ? ORDER BY doc_id LIMIT ?",
    ),
  };
}

/** Best first; equal scores by ID, so results are deterministic. */
function compareVectorHits(a: VectorHit, b: VectorHit): number {
  return b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Unit length in float32, as qdrant stores cosine vectors; the zero vector stays zero. */
function normalize(vector: Float32Array): Float32Array {
  let sum = 0;
  for (const x of vector) sum += x * x;
  const length = Math.sqrt(sum);
  if (length === 0) return vector;
  for (let i = 0; i < vector.length; i++) vector[i] = vector[i] / length;
  return vector;
}

function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

function anyConditionMatches(
  definition: VectorIndexDefinition,
  stored: string,
  conditions: readonly VectorFilterCondition[],
): boolean {
  const values = (JSON.parse(stored) as JSONValue[]).map((json) =>
    json !== null && typeof json === "object" && "$undefined" in json
      ? undefined
      : jsonToConvex(json),
  );
  return conditions.some(({ field, values: wanted }) => {
    const actual = values[definition.filterFields.indexOf(field)];
    return wanted.some((value) => compareKeys([actual], [value]) === 0);
  });
}
