/**
 * Text search semantics, as convex-backend's `crates/search` defines them:
 * the tokenizer, query compilation (with Convex's errors), which documents a
 * query can match, and BM25 relevance. Pure functions: the on-disk index
 * (storage/searchIndex.ts) and read sets (readSet.ts) both use them, so a
 * document is tokenized one way everywhere.
 *
 * - Tokenizer (`constants.rs` `convex_en`): tantivy's SimpleTokenizer (runs of
 *   alphanumeric characters), then RemoveLongFilter (tokens of 32 UTF-8 bytes
 *   or more are dropped), then LowerCaser (per character).
 * - Query (`lib.rs` `compile`, `query.rs` `QueryTerm`): at most 16 terms; the
 *   last term also matches as a prefix (typeahead); no fuzzy matching.
 * - Ranking (`lib.rs` `search`): the BM25 sum over matched terms, a prefix
 *   match weighted 0.5; ties by newest `_creationTime`; at most 1024 results
 *   (`MAX_CANDIDATE_REVISIONS`) and 64 distinct matched terms
 *   (`MAX_UNIQUE_QUERY_TERMS`). Tantivy's lossy field-norm encoding of
 *   document lengths is not reproduced (it is exact up to 40 tokens).
 *
 * Usage:
 *   const compiled = compileSearch(index, serializedFilters);
 *   tokenize("Hello, World") // ["hello", "world"]
 */
import { jsonToConvex, type JSONValue, type Value } from "convex/values";
import type { Doc } from "../values/wire.ts";
import { compareKeys, indexKey } from "./indexRange.ts";

export const MAX_QUERY_TERMS = 16;
export const MAX_TEXT_TERM_BYTES = 32;
export const MAX_CANDIDATE_REVISIONS = 1024;
export const MAX_FILTER_CONDITIONS = 8;
export const MAX_UNIQUE_QUERY_TERMS = 64;
/** tantivy `bm25.rs`. */
const K1 = 1.2;
const B = 0.75;
const PREFIX_BOOST = 0.5;

export type SearchIndexDefinition = {
  table: string;
  name: string;
  searchField: string;
  filterFields: string[];
};

export type QueryTerm = { text: string; prefix: boolean };
export type SearchFilterCondition = {
  field: string;
  value: Value | undefined;
};

export type CompiledSearch = {
  terms: QueryTerm[];
  filters: SearchFilterCondition[];
};

/** convex 1.48 `search_filter_builder_impl.ts` `SerializedSearchFilter`. */
export type SerializedSearchFilter =
  | { type: "Search"; fieldPath: string; value: string }
  | { type: "Eq"; fieldPath: string; value: JSONValue };

/** Thrown for a search Convex rejects; the message is Convex's. */
export class SearchQueryError extends Error {}

const TOKEN = /[\p{Alphabetic}\p{N}]+/gu;
const encoder = new TextEncoder();

export function tokenize(text: string): string[] {
  const tokens: string[] = [];
  for (const [token] of text.matchAll(TOKEN)) {
    if (encoder.encode(token).length >= MAX_TEXT_TERM_BYTES) continue;
    let lower = "";
    for (const char of token) lower += char.toLowerCase();
    tokens.push(lower);
  }
  return tokens;
}

/** The search field's tokens, or none when the field is not a string. */
export function documentTokens(doc: Doc, searchField: string): string[] {
  const value = indexKey(doc, [searchField])[0];
  return typeof value === "string" ? tokenize(value) : [];
}

export function compileSearch(
  index: SearchIndexDefinition,
  serialized: readonly SerializedSearchFilter[],
): CompiledSearch {
  const printable = `${index.table}.${index.name}`;
  let text: string | null = null;
  const filters: SearchFilterCondition[] = [];
  for (const filter of serialized) {
    switch (filter.type) {
      case "Search":
        if (filter.fieldPath !== index.searchField) {
          throw new SearchQueryError(
            `Search query against ${printable} contains a search filter against ${JSON.stringify(filter.fieldPath)}, which doesn't match the indexed \`searchField\` ${JSON.stringify(index.searchField)}.`,
          );
        }
        if (text !== null) {
          throw new SearchQueryError(
            `Search query against ${printable} contains multiple search filters against ${JSON.stringify(filter.fieldPath)}. Only one is allowed.`,
          );
        }
        text = filter.value;
        break;
      case "Eq":
        if (!index.filterFields.includes(filter.fieldPath)) {
          throw new SearchQueryError(
            `Search query against ${printable} contains an equality filter on ${JSON.stringify(filter.fieldPath)} but that field isn't indexed for filtering in \`filterFields\`.`,
          );
        }
        filters.push({
          field: filter.fieldPath,
          value: decodeFilterValue(filter.value),
        });
        break;
      default:
        filter satisfies never;
        throw new SearchQueryError(
          `Unknown search filter ${JSON.stringify(filter)}`,
        );
    }
  }
  if (text === null) {
    throw new SearchQueryError(
      `Search query against ${printable} does not contain any search filters. You must include a search filter like \`q.search(${JSON.stringify(index.searchField)}, searchText)\`.`,
    );
  }
  if (filters.length > MAX_FILTER_CONDITIONS) {
    throw new SearchQueryError(
      `Search query against ${printable} has too many filter conditions. Max: ${MAX_FILTER_CONDITIONS} Actual: ${filters.length}`,
    );
  }
  const tokens = tokenize(text).slice(0, MAX_QUERY_TERMS);
  return {
    terms: tokens.map((token, i) => ({
      text: token,
      prefix: i === tokens.length - 1,
    })),
    filters,
  };
}

/** `{"$undefined": null}` is how the library sends `q.eq(field, undefined)`. */
function decodeFilterValue(json: JSONValue): Value | undefined {
  if (
    json !== null &&
    typeof json === "object" &&
    !Array.isArray(json) &&
    Object.keys(json).length === 1 &&
    "$undefined" in json
  )
    return undefined;
  return jsonToConvex(json);
}

export function filtersMatch(
  doc: Doc,
  filters: readonly SearchFilterCondition[],
): boolean {
  return filters.every(
    ({ field, value }) => compareKeys(indexKey(doc, [field]), [value]) === 0,
  );
}

/** How a query term matches a token: 1 exactly, 0.5 as a prefix, 0 not at all. */
export function termBoost(term: QueryTerm, token: string): number {
  if (token === term.text) return 1;
  if (term.prefix && token.startsWith(term.text)) return PREFIX_BOOST;
  return 0;
}

/**
 * Whether a write of `doc` can change a search's results: it passes the
 * filters and has a token some query term matches. Read sets use this, as
 * convex-backend's `QueryReads` records text terms and filter values.
 */
export function searchCouldMatch(
  doc: Doc,
  searchField: string,
  compiled: CompiledSearch,
): boolean {
  if (compiled.terms.length === 0) return false;
  if (!filtersMatch(doc, compiled.filters)) return false;
  return documentTokens(doc, searchField).some((token) =>
    compiled.terms.some((term) => termBoost(term, token) > 0),
  );
}

/** Index-wide statistics BM25 needs. */
export type Bm25Stats = { numDocs: number; numTokens: number };

/** One matched term's contribution to a document's score. */
export function bm25Term(
  stats: Bm25Stats,
  docFrequency: number,
  termFrequency: number,
  docLength: number,
  boost: number,
): number {
  // tantivy uses 1 document when the index is empty (scoring.rs `total_num_docs`).
  const numDocs = Math.max(stats.numDocs, 1);
  const avgLength = stats.numTokens / numDocs;
  const idf = Math.log(
    1 + (numDocs - docFrequency + 0.5) / (docFrequency + 0.5),
  );
  const norm = avgLength === 0 ? 1 : 1 - B + (B * docLength) / avgLength;
  return (
    boost * idf * ((termFrequency * (K1 + 1)) / (termFrequency + K1 * norm))
  );
}

/**
 * A document's score for a query, from its own tokens: used for writes a
 * transaction has not committed yet, which the on-disk index does not hold.
 * `docFrequency` answers for the index; a term only this document has counts
 * as one document.
 */
export function scoreDocument(
  doc: Doc,
  searchField: string,
  compiled: CompiledSearch,
  stats: Bm25Stats,
  docFrequency: (term: string) => number,
): number {
  if (!filtersMatch(doc, compiled.filters)) return 0;
  const tokens = documentTokens(doc, searchField);
  const frequencies = new Map<string, number>();
  for (const token of tokens)
    frequencies.set(token, (frequencies.get(token) ?? 0) + 1);
  let score = 0;
  for (const [token, tf] of frequencies) {
    let boost = 0;
    for (const term of compiled.terms)
      boost = Math.max(boost, termBoost(term, token));
    if (boost === 0) continue;
    score += bm25Term(
      stats,
      Math.max(docFrequency(token), 1),
      tf,
      tokens.length,
      boost,
    );
  }
  return score;
}
