/**
 * `ctx.vectorSearch` in actions (the `1.0/actions/vectorSearch` syscall):
 * compiles the query as convex-backend's `QdrantSchema::compile` does (limit
 * default 10 and at most 256, filters of `q.eq` / `q.or` on `filterFields`
 * only, at most 64 values, the index's dimensions) and answers
 * `{results: [{_id, _score}]}` from storage/vectorIndex.ts, best first.
 *
 * Filter semantics (convex-backend `vector/src/query.rs`): `q.eq`s under any
 * nesting of `q.or` are grouped by field, and a document matches when any of
 * them holds (qdrant `should`).
 *
 * Usage: `createSyscalls({ ..., extensions: [vectorSearchSyscalls(db)] })`
 */
import { jsonToConvex, type JSONValue, type Value } from "convex/values";
import type { Database } from "../storage/database.ts";
import type { VectorFilterCondition } from "../storage/vectorIndex.ts";
import type { SyscallExtensions } from "./syscalls.ts";
import { indexBackfillingError } from "./transaction.ts";

/** convex-backend `vector/src/lib.rs`. */
const DEFAULT_VECTOR_LIMIT = 10;
const MAX_VECTOR_RESULTS = 256;
const MAX_FILTER_LENGTH = 64;
/** convex-backend `common/src/bootstrap_model/index/vector_index` `MAX_VECTOR_DIMENSIONS`. */
const MAX_VECTOR_DIMENSIONS = 4096;

type VectorQueryJson = {
  indexName?: unknown;
  limit?: unknown;
  vector?: unknown;
  expressions?: unknown;
};

export function vectorSearchSyscalls(db: Database): SyscallExtensions {
  return {
    async: {
      "1.0/actions/vectorSearch": (request, args) => {
        if (request.udfType !== "action") {
          throw new Error("vectorSearch can only be called from an action");
        }
        return Promise.resolve(
          vectorSearch(db, (args.query ?? {}) as VectorQueryJson),
        );
      },
    },
  };
}

export function vectorSearch(
  db: Database,
  query: VectorQueryJson,
): { results: { _id: string; _score: number }[] } {
  const indexName = String(query.indexName);
  const dot = indexName.indexOf(".");
  const lookup =
    dot <= 0
      ? ({ state: "missing" } as const)
      : db.vectorIndex(indexName.slice(0, dot), indexName.slice(dot + 1));
  if (lookup.state === "staged") throw indexBackfillingError(indexName);
  if (lookup.state === "missing")
    throw new Error(`Index ${indexName} not found.`);
  const index = lookup.index;

  const vector = query.vector;
  if (
    !Array.isArray(vector) ||
    !vector.every((x): x is number => typeof x === "number")
  ) {
    throw new Error("`vector` must be an array of numbers in vectorSearch");
  }
  if (vector.length > MAX_VECTOR_DIMENSIONS) {
    throw new Error(dimensionsMismatch(MAX_VECTOR_DIMENSIONS, vector.length));
  }
  const limit = query.limit ?? DEFAULT_VECTOR_LIMIT;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 0) {
    throw new Error(
      `invalid value: ${JSON.stringify(limit)}, expected a non-negative integer limit`,
    );
  }
  if (limit > MAX_VECTOR_RESULTS) {
    throw new Error(
      `Vector queries can fetch at most ${MAX_VECTOR_RESULTS} results, requested ${limit}.`,
    );
  }
  const conditions =
    query.expressions === null || query.expressions === undefined
      ? []
      : groupByField(collectEqualities(query.expressions as JSONValue));
  let length = 0;
  for (const { field, values } of conditions) {
    if (!index.filterFields.includes(field)) {
      throw new Error(
        `Vector query against ${indexName} contains a filter on ${JSON.stringify(field)} but that field isn't indexed for filtering in \`filterFields\`.`,
      );
    }
    length += values.length;
  }
  if (length > MAX_FILTER_LENGTH) {
    throw new Error(
      `Vector query against ${indexName} has too many conditions. Max: ${MAX_FILTER_LENGTH} Actual: ${length}`,
    );
  }
  if (vector.length !== index.dimensions) {
    throw new Error(dimensionsMismatch(index.dimensions, vector.length));
  }
  const hits = db.vectorSearch.search(index, vector, limit, conditions);
  return { results: hits.map((hit) => ({ _id: hit.id, _score: hit.score })) };
}

function dimensionsMismatch(expected: number, received: number): string {
  return `Expected a vector with dimensions ${expected}, received ${received}.`;
}

/** `{$eq: [{$field}, {$literal}]}` leaves of an `$or` tree, as (field, value) pairs. */
function collectEqualities(
  expression: JSONValue,
): { field: string; value: Value | undefined }[] {
  const invalid = (message: string) => new Error(message);
  if (expression === null || typeof expression !== "object") {
    throw invalid("Filters should be a combination of `q.eq` and `q.or`.");
  }
  const node = expression as Record<string, JSONValue>;
  if (Array.isArray(node.$or)) {
    return node.$or.flatMap((child) => collectEqualities(child));
  }
  if (Array.isArray(node.$eq) && node.$eq.length === 2) {
    const [left, right] = node.$eq as Record<string, JSONValue>[];
    if (
      typeof left?.$field === "string" &&
      right !== null &&
      typeof right === "object" &&
      "$literal" in right
    ) {
      return [{ field: left.$field, value: decodeLiteral(right.$literal) }];
    }
    throw invalid(
      "`q.eq` must take a field path as its first argument and a value as its second",
    );
  }
  throw invalid("Filters should be a combination of `q.eq` and `q.or`.");
}

function decodeLiteral(json: JSONValue): Value | undefined {
  if (
    json !== null &&
    typeof json === "object" &&
    !Array.isArray(json) &&
    "$undefined" in json
  )
    return undefined;
  return jsonToConvex(json);
}

function groupByField(
  pairs: { field: string; value: Value | undefined }[],
): VectorFilterCondition[] {
  const byField = new Map<string, (Value | undefined)[]>();
  for (const { field, value } of pairs) {
    const values = byField.get(field) ?? [];
    values.push(value);
    byField.set(field, values);
  }
  return [...byField].map(([field, values]) => ({ field, values }));
}
