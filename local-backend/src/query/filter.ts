/**
 * Evaluates the serialized filter expressions that `query.filter(q => ...)`
 * sends (convex 1.48 `server/impl/filter_builder_impl.ts`) against one
 * document, with the real backend's semantics (convex-backend
 * `crates/common/src/query.rs` `Expression::eval`):
 *
 * - `{$field: "a.b"}` reads a nested field through objects only; a missing
 *   field is `undefined`, which is distinct from `null`.
 * - Comparisons use Convex's total order across types (undefined < null <
 *   int64 < float64 < boolean < string < bytes < array < object), so `1n` and
 *   `1` are not equal and a missing field is less than everything.
 * - Arithmetic needs two int64s or two float64s; anything else is an error.
 * - `$and`, `$or` and `$not` need booleans and short-circuit.
 *
 * Usage:
 *   filterMatches({ $eq: [{ $field: "author" }, { $literal: "ann" }] }, doc)
 */
import { compareValues, type JSONValue, type Value } from "convex/values";
import {
  decodeValueOrUndefined,
  displayValue,
  isObjectValue,
  valueTypeName,
} from "../values/wire.ts";

type MaybeValue = Value | undefined;
type Document = Record<string, MaybeValue>;

const MIN_INT64 = -(2n ** 63n);

// Maps, not object literals, so an operator named like an Object.prototype
// member (`{"toString": ...}`) is unknown rather than callable.
const COMPARISONS = new Map<string, (cmp: number) => boolean>([
  ["$eq", (cmp) => cmp === 0],
  ["$neq", (cmp) => cmp !== 0],
  ["$lt", (cmp) => cmp < 0],
  ["$lte", (cmp) => cmp <= 0],
  ["$gt", (cmp) => cmp > 0],
  ["$gte", (cmp) => cmp >= 0],
]);

type Arithmetic = {
  name: string;
  ints: (l: bigint, r: bigint) => bigint;
  floats: (l: number, r: number) => number;
};

// Names match the backend's `binary_arithmetic("add" | "subtract" | ...)`.
const ARITHMETIC = new Map<string, Arithmetic>([
  ["$add", { name: "add", ints: (l, r) => l + r, floats: (l, r) => l + r }],
  [
    "$sub",
    { name: "subtract", ints: (l, r) => l - r, floats: (l, r) => l - r },
  ],
  [
    "$mul",
    { name: "multiply", ints: (l, r) => l * r, floats: (l, r) => l * r },
  ],
  ["$div", { name: "divide", ints: (l, r) => l / r, floats: (l, r) => l / r }],
  ["$mod", { name: "mod", ints: (l, r) => l % r, floats: (l, r) => l % r }],
]);

/** Reads `a.b.c` from a document, descending only through objects (`ConvexObject::get_path`). */
export function getFieldPath(doc: Document, fieldPath: string): MaybeValue {
  let current: MaybeValue = doc;
  for (const part of fieldPath.split(".")) {
    if (!isObjectValue(current)) return undefined;
    current = Object.hasOwn(current, part) ? current[part] : undefined;
  }
  return current;
}

export function evaluateFilter(expr: unknown, doc: Document): MaybeValue {
  if (typeof expr !== "object" || expr === null || Array.isArray(expr)) {
    throw new Error(`Invalid filter expression: ${JSON.stringify(expr)}`);
  }
  const keys = Object.keys(expr);
  if (keys.length !== 1) {
    throw new Error(`Invalid filter expression: ${JSON.stringify(expr)}`);
  }
  const op = keys[0];
  const arg: unknown = (expr as Record<string, unknown>)[op];

  if (op === "$field") {
    if (typeof arg !== "string") {
      throw new Error(`Invalid $field expression: ${JSON.stringify(expr)}`);
    }
    return getFieldPath(doc, arg);
  }
  if (op === "$literal") return decodeValueOrUndefined(arg as JSONValue);

  const comparison = COMPARISONS.get(op);
  if (comparison !== undefined) {
    const [l, r] = binaryOperands(op, arg);
    return comparison(
      compareValues(evaluateFilter(l, doc), evaluateFilter(r, doc)),
    );
  }
  const arithmetic = ARITHMETIC.get(op);
  if (arithmetic !== undefined) {
    const [l, r] = binaryOperands(op, arg);
    return applyArithmetic(
      op,
      arithmetic,
      evaluateFilter(l, doc),
      evaluateFilter(r, doc),
    );
  }
  switch (op) {
    case "$neg":
      return negate(evaluateFilter(arg, doc));
    case "$not":
      return !asBoolean(evaluateFilter(arg, doc));
    case "$and":
      return naryOperands(op, arg).every((x) =>
        asBoolean(evaluateFilter(x, doc)),
      );
    case "$or":
      return naryOperands(op, arg).some((x) =>
        asBoolean(evaluateFilter(x, doc)),
      );
    default:
      throw new Error(`Unsupported filter operator: ${op}`);
  }
}

/**
 * Whether a document passes a filter. Like the backend's `Filter` query node
 * (`crates/database/src/query/filter.rs`, `expr.eval(..)?.into_boolean()?`),
 * a result that is not a boolean is an error, not a silent "no match".
 */
export function filterMatches(expr: unknown, doc: Document): boolean {
  return asBoolean(evaluateFilter(expr, doc));
}

function binaryOperands(op: string, arg: unknown): [unknown, unknown] {
  if (!Array.isArray(arg) || arg.length !== 2) {
    throw new Error(
      `Invalid ${op} expression: expected two operands, got ${JSON.stringify(arg)}`,
    );
  }
  return [arg[0], arg[1]];
}

function naryOperands(op: string, arg: unknown): unknown[] {
  if (!Array.isArray(arg)) {
    throw new Error(
      `Invalid ${op} expression: expected a list of operands, got ${JSON.stringify(arg)}`,
    );
  }
  return arg;
}

// `MaybeValue::into_boolean` wording.
function asBoolean(v: MaybeValue): boolean {
  if (typeof v !== "boolean") {
    throw new Error(
      `Cannot use value ${displayValue(v)} (type ${valueTypeName(v)}) as a Boolean`,
    );
  }
  return v;
}

function applyArithmetic(
  op: string,
  arithmetic: Arithmetic,
  l: MaybeValue,
  r: MaybeValue,
): Value {
  if (typeof l === "number" && typeof r === "number")
    return arithmetic.floats(l, r);
  if (typeof l === "bigint" && typeof r === "bigint") {
    // i64 `/` and `%` panic in Rust on a zero divisor and on MIN / -1, so the
    // backend never returns a value for them; fail with a readable message.
    if ((op === "$div" || op === "$mod") && r === 0n) {
      throw new Error(
        `Cannot ${arithmetic.name} ${displayValue(l)} (type Int64) by zero`,
      );
    }
    if ((op === "$div" || op === "$mod") && l === MIN_INT64 && r === -1n) {
      throw new Error(
        `Cannot ${arithmetic.name} ${displayValue(l)} by -1: the result overflows int64`,
      );
    }
    // The backend adds i64s with plain `+` (a release build wraps on overflow).
    return BigInt.asIntN(64, arithmetic.ints(l, r));
  }
  throw new Error(
    `Cannot ${arithmetic.name} ${displayValue(l)} (type ${valueTypeName(l)}) and ` +
      `${displayValue(r)} (type ${valueTypeName(r)})`,
  );
}

function negate(x: MaybeValue): Value {
  if (typeof x === "bigint") return BigInt.asIntN(64, -x);
  if (typeof x === "number") return -x;
  throw new Error(
    `Cannot negate ${displayValue(x)} (type ${valueTypeName(x)})`,
  );
}
