/**
 * Text search indexes on disk: an inverted index per `searchIndex` of the
 * schema, in SQLite tables of the database file, maintained inside each
 * commit's SQLite transaction (so index entries are exactly as durable as
 * their documents), and backfilled from the table, resumably, when an index
 * is added or its definition changes (derivedIndexes.ts).
 *
 * Tables (one row set per index, keyed by "table.index"):
 *   search_indexes  key -> definition, document count, token count (BM25 stats)
 *   search_postings (key, term, doc) -> term frequency, the document's token
 *                   count and _creationTime (all BM25 and ordering need)
 *   search_filters  (key, doc) -> filter field values, read only for the
 *                   best-scored candidates of a filtered query
 *
 * A query reads the postings of its terms (prefix terms by a range over
 * `term`), so its cost grows with the matching postings, not the table.
 * Staged indexes are not built: Convex does not serve them.
 *
 * Usage:
 *   const search = new SearchIndexes(connection);
 *   yield* search.prepare(definitions, docsAfter);    // while a schema is readied
 *   search.setSchema(definitions, docsAfter);         // at install
 *   search.apply(changes);                            // inside the commit transaction
 *   const { hits } = search.search(definition, compiled);
 */
import type BetterSqlite3 from "better-sqlite3";
import { convexToJson, jsonToConvex, type JSONValue } from "convex/values";
import type { DocumentChange } from "../query/readSet.ts";
import { compareKeys, indexKey } from "../query/indexRange.ts";
import {
  type Bm25Stats,
  bm25Term,
  type CompiledSearch,
  documentTokens,
  MAX_CANDIDATE_REVISIONS,
  MAX_UNIQUE_QUERY_TERMS,
  type SearchIndexDefinition,
  termBoost,
} from "../query/textSearch.ts";
import type { Doc } from "../values/wire.ts";
import {
  type BackfillProgress,
  DerivedIndexes,
  derivedIndexKey as keyOf,
  type DocumentsAfter,
  PAGE_ROWS,
  pages,
} from "./derivedIndexes.ts";

export type SearchHit = { id: string; score: number; creationTime: number };

/** A matched term of the index and what BM25 needs about it. */
export type MatchedTerm = { term: string; boost: number; docFrequency: number };

export type SearchResult = {
  hits: SearchHit[];
  stats: Bm25Stats;
  terms: MatchedTerm[];
};

/** The highest code point: every string starting with `p` sorts below `p + MAX_CHAR`. */
const MAX_CHAR = String.fromCodePoint(0x10ffff);

export class SearchIndexes {
  readonly #stmt: ReturnType<typeof prepare>;
  readonly #derived: DerivedIndexes<SearchIndexDefinition>;

  constructor(db: BetterSqlite3.Database) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS search_indexes (
        key TEXT PRIMARY KEY,
        definition TEXT NOT NULL,
        num_docs INTEGER NOT NULL,
        num_tokens INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS search_filters (
        key TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        filters TEXT NOT NULL,
        PRIMARY KEY (key, doc_id)
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS search_postings (
        key TEXT NOT NULL,
        term TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        tf INTEGER NOT NULL,
        length INTEGER NOT NULL,
        creation_time REAL NOT NULL,
        PRIMARY KEY (key, term, doc_id)
      ) WITHOUT ROWID;
    `);
    this.#stmt = prepare(db);
    this.#derived = new DerivedIndexes<SearchIndexDefinition>(db, "search", {
      keyOf,
      stored: () =>
        this.#stmt.listIndexes.all() as { key: string; definition: string }[],
      drop: (key) => {
        this.#stmt.dropDocs.run(key);
        this.#stmt.dropTerms.run(key);
        this.#stmt.dropIndex.run(key);
      },
      put: (key, definition) => this.#stmt.putIndex.run(key, definition),
      insert: (definition, doc) => this.#insert(definition, doc),
      remove: (definition, doc) => this.#remove(definition, doc),
    });
  }

  /** Backfills the declared indexes a step per yield, while a schema is readied (derivedIndexes.ts). */
  prepare(
    definitions: readonly SearchIndexDefinition[],
    docsAfter: DocumentsAfter,
    progress?: BackfillProgress,
  ): Generator<void, void> {
    return this.#derived.prepare(definitions, docsAfter, progress);
  }

  /** Installs the schema's indexes: drops undeclared ones, finishes the others in slices. */
  setSchema(
    definitions: readonly SearchIndexDefinition[],
    docsAfter: DocumentsAfter,
  ): void {
    this.#derived.setSchema(definitions, docsAfter);
  }

  /** False while the index is still backfilling: queries on it fail as Convex's do. */
  isReady(definition: SearchIndexDefinition): boolean {
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

  /** The index's BM25 statistics. */
  stats(definition: SearchIndexDefinition): Bm25Stats {
    const row = this.#stmt.getIndex.get(keyOf(definition)) as
      { num_docs: number; num_tokens: number } | undefined;
    return { numDocs: row?.num_docs ?? 0, numTokens: row?.num_tokens ?? 0 };
  }

  /**
   * The best matches of committed documents, best first: score descending,
   * then newest first (convex-backend orders by `-score, -creationTime`).
   */
  search(
    definition: SearchIndexDefinition,
    compiled: CompiledSearch,
  ): SearchResult {
    const key = keyOf(definition);
    const stats = this.stats(definition);
    const terms = this.#matchTerms(key, compiled);
    const scores = new Map<string, SearchHit>();
    for (const { term, boost, docFrequency } of terms) {
      for (const [docId, tf, length, creationTime] of pages(
        (after) =>
          this.#stmt.postings.raw().all(key, term, after, PAGE_ROWS) as [
            string,
            number,
            number,
            number,
          ][],
        ([docId]) => docId,
      )) {
        let hit = scores.get(docId);
        if (hit === undefined) {
          hit = {
            id: docId,
            score: 0,
            creationTime,
          };
          scores.set(docId, hit);
        }
        hit.score += bm25Term(stats, docFrequency, tf, length, boost);
      }
    }
    const ranked = [...scores.values()].sort(compareHits);
    if (compiled.filters.length === 0)
      return { hits: ranked.slice(0, MAX_CANDIDATE_REVISIONS), stats, terms };
    // Filters are checked best first, only until the result is full.
    const hits: SearchHit[] = [];
    for (const hit of ranked) {
      const row = this.#stmt.getFilters.get(key, hit.id) as {
        filters: string;
      };
      if (!storedFiltersMatch(definition, row.filters, compiled)) continue;
      hits.push(hit);
      if (hits.length === MAX_CANDIDATE_REVISIONS) break;
    }
    return { hits, stats, terms };
  }

  /**
   * The index terms the query's terms match, at most 64, exact matches
   * first, each with its best boost and its document frequency.
   */
  #matchTerms(key: string, compiled: CompiledSearch): MatchedTerm[] {
    const matched = new Map<string, MatchedTerm>();
    const add = (term: string, boost: number, docFrequency: number) => {
      const existing = matched.get(term);
      if (existing === undefined) {
        if (matched.size < MAX_UNIQUE_QUERY_TERMS)
          matched.set(term, { term, boost, docFrequency });
      } else existing.boost = Math.max(existing.boost, boost);
    };
    for (const term of compiled.terms) {
      const row = this.#stmt.docFrequency.get(key, term.text) as {
        n: number;
      };
      if (row.n > 0) add(term.text, 1, row.n);
    }
    for (const term of compiled.terms) {
      if (!term.prefix) continue;
      const rows = this.#stmt.prefixTerms.all(
        key,
        term.text,
        term.text + MAX_CHAR,
        MAX_UNIQUE_QUERY_TERMS + 1,
      ) as { term: string; n: number }[];
      for (const row of rows) {
        if (row.term !== term.text)
          add(row.term, termBoost(term, row.term), row.n);
      }
    }
    return [...matched.values()];
  }

  #insert(definition: SearchIndexDefinition, doc: Doc): void {
    const key = keyOf(definition);
    const tokens = documentTokens(doc, definition.searchField);
    const frequencies = new Map<string, number>();
    for (const token of tokens)
      frequencies.set(token, (frequencies.get(token) ?? 0) + 1);
    for (const [term, tf] of frequencies)
      this.#stmt.putTerm.run(
        key,
        term,
        doc._id,
        tf,
        tokens.length,
        doc._creationTime,
      );
    if (definition.filterFields.length > 0)
      this.#stmt.putFilters.run(key, doc._id, encodeFilters(definition, doc));
    this.#stmt.addStats.run(1, tokens.length, key);
  }

  #remove(definition: SearchIndexDefinition, doc: Doc): void {
    const key = keyOf(definition);
    const tokens = documentTokens(doc, definition.searchField);
    for (const term of new Set(tokens))
      this.#stmt.deleteTerm.run(key, term, doc._id);
    this.#stmt.deleteFilters.run(key, doc._id);
    this.#stmt.addStats.run(-1, -tokens.length, key);
  }
}

function prepare(db: BetterSqlite3.Database) {
  return {
    listIndexes: db.prepare("SELECT key, definition FROM search_indexes"),
    getIndex: db.prepare(
      "SELECT num_docs, num_tokens FROM search_indexes WHERE key = ?",
    ),
    putIndex: db.prepare(
      "INSERT INTO search_indexes (key, definition, num_docs, num_tokens) VALUES (?, ?, 0, 0)",
    ),
    dropIndex: db.prepare("DELETE FROM search_indexes WHERE key = ?"),
    dropDocs: db.prepare("DELETE FROM search_filters WHERE key = ?"),
    dropTerms: db.prepare("DELETE FROM search_postings WHERE key = ?"),
    addStats: db.prepare(
      "UPDATE search_indexes SET num_docs = num_docs + ?, num_tokens = num_tokens + ? WHERE key = ?",
    ),
    putFilters: db.prepare(
      "INSERT INTO search_filters (key, doc_id, filters) VALUES (?, ?, ?)",
    ),
    getFilters: db.prepare(
      "SELECT filters FROM search_filters WHERE key = ? AND doc_id = ?",
    ),
    deleteFilters: db.prepare(
      "DELETE FROM search_filters WHERE key = ? AND doc_id = ?",
    ),
    putTerm: db.prepare(
      "INSERT INTO search_postings (key, term, doc_id, tf, length, creation_time) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    deleteTerm: db.prepare(
      "DELETE FROM search_postings WHERE key = ? AND term = ? AND doc_id = ?",
    ),
    docFrequency: db.prepare(
      "SELECT COUNT(*) AS n FROM search_postings WHERE key = ? AND term = ?",
    ),
    prefixTerms: db.prepare(
      "SELECT term, COUNT(*) AS n FROM search_postings WHERE key = ? AND term >= ? AND term < ? GROUP BY term ORDER BY term LIMIT ?",
    ),
    postings: db.prepare(
      "SELECT doc_id, tf, length, creation_time FROM search_postings WHERE key = ? AND term = ? AND doc_id > ? ORDER BY doc_id LIMIT ?",
    ),
  };
}

export function compareHits(a: SearchHit, b: SearchHit): number {
  return (
    b.score - a.score ||
    b.creationTime - a.creationTime ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/** Filter field values in declaration order, `undefined` kept as `$undefined`. */
function encodeFilters(definition: SearchIndexDefinition, doc: Doc): string {
  return JSON.stringify(
    indexKey(doc, definition.filterFields).map((value) =>
      value === undefined ? { $undefined: null } : convexToJson(value),
    ),
  );
}

function storedFiltersMatch(
  definition: SearchIndexDefinition,
  stored: string,
  compiled: CompiledSearch,
): boolean {
  if (compiled.filters.length === 0) return true;
  const values = (JSON.parse(stored) as JSONValue[]).map((json) =>
    json !== null && typeof json === "object" && "$undefined" in json
      ? undefined
      : jsonToConvex(json),
  );
  return compiled.filters.every(({ field, value }) => {
    const at = definition.filterFields.indexOf(field);
    return compareKeys([values[at]], [value]) === 0;
  });
}
