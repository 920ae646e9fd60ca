/**
 * Index ranges from `.withIndex(name, q => q.eq(...).gt(...))` (convex 1.48
 * `server/impl/index_range_builder_impl.ts`): checking their shape against the
 * index, turning them into bounds, and comparing index keys.
 *
 * Shape rules and error texts follow convex-backend
 * `crates/common/src/query.rs` (`IndexRange::split` and `compile`): equalities
 * may come in any order but must cover a prefix of the index fields; then at
 * most one lower and one upper bound, both on the next field. User indexes
 * end with the implicit `_creationTime, _id`, so both can be ranged over too.
 *
 * An index key is the list of a document's values for the index fields, a
 * missing field being `undefined` (which sorts before `null`); how keys
 * compare, with each other and with ranges, is `keys.ts`.
 *
 * Usage:
 *   const fields = indexedFieldsWithSuffix(["author"]);
 *   const bounds = compileIndexRange("messages.by_author", ["author"], range);
 *   const range = boundsToKeyRange(bounds);
 */
import type { JSONValue, Value } from "convex/values";
import {
  compareKeyBytes,
  encodeKey,
  type IndexKey,
  intervalContains,
  type KeyRange,
  type Order,
  rangeToInterval,
} from "./keys.ts";
import { decodeValueOrUndefined, displayValue } from "../values/wire.ts";
import { getFieldPath } from "./filter.ts";

export type { IndexKey, KeyRange, Order };

export type IndexRangeExpr = {
  type: "Eq" | "Gt" | "Gte" | "Lt" | "Lte";
  fieldPath: string;
  /** `convexOrUndefinedToJson` output: convex JSON or `{"$undefined": null}`. */
  value: unknown;
};

export type Bound = { value: Value | undefined; inclusive: boolean };

export type IndexBounds = {
  indexName: string;
  /** Every field of the index in order, the implicit suffix included. */
  fields: string[];
  /** Values that `fields[0 .. eq.length)` must equal. */
  eq: IndexKey;
  /** Bounds on `fields[eq.length]`. */
  lower?: Bound;
  upper?: Bound;
};

const CREATION_TIME = "_creationTime";
const ID = "_id";
const RANGE_TYPES = new Set(["Eq", "Gt", "Gte", "Lt", "Lte"]);
const INDEX_DOCS = "https://docs.convex.dev/using/indexes";

/**
 * The full field list of an index. User indexes get `_creationTime, _id`
 * appended, as the backend appends `_creationTime` at schema push and `_id` in
 * `IndexedFields::iter_with_id`. Pass `["_creationTime"]` for
 * `by_creation_time` and `["_id"]` for `by_id`. A list that already ends in
 * `_id` is returned as is: user fields cannot be system fields, so it must
 * already be complete.
 */
export function indexedFieldsWithSuffix(fields: readonly string[]): string[] {
  if (fields.at(-1) === ID) return [...fields];
  if (fields.at(-1) === CREATION_TIME) return [...fields, ID];
  return [...fields, CREATION_TIME, ID];
}

/**
 * Checks a range against an index and returns its bounds; throws an Error
 * with the backend's message when the range does not fit the index.
 * `indexFields` are the user's fields; the implicit suffix may be included
 * or left for `indexedFieldsWithSuffix` to add.
 */
export function compileIndexRange(
  indexName: string,
  indexFields: readonly string[],
  range: IndexRangeExpr[],
): IndexBounds {
  const fields = indexedFieldsWithSuffix(indexFields);
  const { equalities, inequality } = splitRange(indexName, range);

  const rank = new Map(fields.map((field, i) => [field, i]));
  const shownFields = `[${fields
    .slice(0, fields.at(-1) === ID ? -1 : undefined)
    .map((f) => JSON.stringify(f))
    .join(", ")}]`;
  const notInIndex = (field: string) =>
    new Error(
      `The index range included a comparison with "${field}", but ${indexName} with fields ` +
        `${shownFields} doesn't index this field. For more information see ${INDEX_DOCS}.`,
    );

  // The backend keeps equalities in a BTreeMap, so the first unknown field it
  // reports is the smallest path, not the first one written.
  for (const field of [...equalities.keys()].sort(compareFieldPaths)) {
    if (!rank.has(field)) throw notInIndex(field);
  }
  if (inequality !== undefined && !rank.has(inequality.field)) {
    throw notInIndex(inequality.field);
  }

  const eqFields = [...equalities.keys()].sort(
    (a, b) => rank.get(a)! - rank.get(b)!,
  );
  const used =
    inequality === undefined ? eqFields : [...eqFields, inequality.field];
  used.forEach((field, i) => {
    if (fields[i] !== field) {
      const queryFields = `[${used.map((f) => JSON.stringify(f)).join(", ")}]`;
      throw new Error(
        `Tried to query index ${indexName} but the query didn't use the index fields in order.\n` +
          `Index fields: ${shownFields}\n` +
          `Query fields: ${queryFields}\n` +
          `First incorrect field: "${field}"\n` +
          `For more information see ${INDEX_DOCS}.`,
      );
    }
  });

  return {
    indexName,
    fields,
    eq: eqFields.map((field) => equalities.get(field)),
    ...(inequality?.lower !== undefined ? { lower: inequality.lower } : {}),
    ...(inequality?.upper !== undefined ? { upper: inequality.upper } : {}),
  };
}

type SplitRange = {
  equalities: Map<string, Value | undefined>;
  inequality?: { field: string; lower?: Bound; upper?: Bound };
};

// `IndexRange::split`: one value per equality field, one lower and one upper
// bound, and both bounds on the same field, which no equality may also use.
function splitRange(indexName: string, range: IndexRangeExpr[]): SplitRange {
  if (!Array.isArray(range)) {
    throw new Error(
      `Invalid index range: expected a list, got ${JSON.stringify(range)}`,
    );
  }
  const equalities = new Map<string, Value | undefined>();
  let inequality: SplitRange["inequality"];
  for (const expr of range) {
    if (
      typeof expr !== "object" ||
      expr === null ||
      !RANGE_TYPES.has(expr.type) ||
      typeof expr.fieldPath !== "string"
    ) {
      throw new Error(
        `Invalid index range expression: ${JSON.stringify(expr)}`,
      );
    }
    const field = expr.fieldPath;
    const value = decodeValueOrUndefined(expr.value as JSONValue);
    if (expr.type === "Eq") {
      if (equalities.has(field)) {
        throw alreadyDefined("equality", field, "==", equalities.get(field));
      }
      equalities.set(field, value);
      continue;
    }
    const isUpper = expr.type === "Lt" || expr.type === "Lte";
    const inclusive = expr.type === "Gte" || expr.type === "Lte";
    if (
      inequality !== undefined &&
      inequality[isUpper ? "upper" : "lower"] !== undefined
    ) {
      const comparator = `${isUpper ? "<" : ">"}${inclusive ? "=" : ""}`;
      throw alreadyDefined(
        isUpper ? "upper" : "lower",
        field,
        comparator,
        value,
      );
    }
    if (inequality !== undefined && inequality.field !== field) {
      throw new Error(
        "Upper and lower bounds in `range` can only be applied to a single index field. " +
          `This query against index ${indexName} attempted to set a range bound on both ` +
          `"${inequality.field}" and "${field}". Consider using \`filter\` instead. ` +
          `See ${INDEX_DOCS} for more info.`,
      );
    }
    inequality ??= { field };
    inequality[isUpper ? "upper" : "lower"] = { value, inclusive };
  }
  if (inequality !== undefined && equalities.has(inequality.field)) {
    throw alreadyDefined(
      "inequality",
      inequality.field,
      "==",
      equalities.get(inequality.field),
    );
  }
  return { equalities, inequality };
}

function alreadyDefined(
  boundType: string,
  field: string,
  comparator: string,
  value: Value | undefined,
): Error {
  return new Error(
    `Already defined ${boundType} bound in index range. ` +
      `Can't add "${field}" ${comparator} ${displayValue(value)}.`,
  );
}

function compareFieldPaths(a: string, b: string): number {
  const left = a.split(".");
  const right = b.split(".");
  for (let i = 0; i < left.length && i < right.length; i++) {
    if (left[i] !== right[i]) return left[i] < right[i] ? -1 : 1;
  }
  return left.length - right.length;
}

/** A document's key for an index: its values for `fields`, in order, `undefined` where missing. */
export function indexKey(
  doc: Record<string, Value | undefined>,
  fields: string[],
): IndexKey {
  return fields.map((field) => getFieldPath(doc, field));
}

/** Convex's order of keys (lexicographic over `compareValues`), by their bytes. */
export function compareKeys(a: IndexKey, b: IndexKey): number {
  return compareKeyBytes(encodeKey(a), encodeKey(b));
}

/**
 * The bounds as prefix bounds over whole keys, matching the backend's
 * interval (`IndexRange::compile`): equalities alone select every key with
 * that prefix; an exclusive lower bound skips every key whose prefix equals
 * it, an inclusive upper bound keeps them all.
 */
export function boundsToKeyRange(bounds: IndexBounds): KeyRange {
  return {
    start:
      bounds.lower === undefined
        ? { key: bounds.eq, inclusive: true }
        : {
            key: [...bounds.eq, bounds.lower.value],
            inclusive: bounds.lower.inclusive,
          },
    end:
      bounds.upper === undefined
        ? { key: bounds.eq, inclusive: true }
        : {
            key: [...bounds.eq, bounds.upper.value],
            inclusive: bounds.upper.inclusive,
          },
  };
}

export function keyInRange(key: IndexKey, range: KeyRange): boolean {
  return intervalContains(rangeToInterval(range), encodeKey(key));
}
