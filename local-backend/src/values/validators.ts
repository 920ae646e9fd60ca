/**
 * Checks values against the validator JSON that convex 1.48 functions export
 * (`fn.exportArgs()`, `fn.exportReturns()`, schema `documentType`), with the
 * real backend's rules and messages (convex-backend
 * `crates/common/src/schemas/validator.rs` `check_value` and
 * `ValidationError`, `crates/model/src/modules/function_validators.rs`).
 *
 * - `v.float64()` and `v.int64()` are distinct: `1` is not an int64, `1n` not a
 *   float64.
 * - Objects refuse extra fields and missing required ones; an optional field
 *   may be absent or `undefined`.
 * - Messages carry the path to the bad value (`Path: .items[0].name`) and
 *   print validators back as `v.xxx()`.
 *
 * Usage:
 *   const error = validateArgs(fn.exportArgs(), args, { tableNameOfId });
 *   if (error !== null) throw new Error(error);
 */
import {
  CommitTsPlaceholder,
  compareValues,
  jsonToConvex,
  type ValidatorJSON,
  type Value,
} from "convex/values";
import { displayValue, formatFloatJson, isObjectValue } from "./wire.ts";

export type ValidateOptions = {
  /** Path of the value inside a larger one, such as `.author`; empty by default. */
  path?: string;
  /**
   * The name of the table an ID string belongs to, or null when it is not an
   * ID of any table. Gives the backend's "Found ID ... from table ..." message.
   */
  tableNameOfId?: (id: string) => string | null;
  /** Whether `id` is an ID of `tableName`; used when `tableNameOfId` is absent. */
  isTableId?: (tableName: string, id: string) => boolean;
};

type ObjectValidatorJSON = Extract<ValidatorJSON, { type: "object" }>;
type MaybeValue = Value | undefined;
type ObjectValue = { [key: string]: MaybeValue };

type Failure =
  | {
      kind: "noMatch";
      value: MaybeValue;
      validator: ValidatorJSON;
      path: string;
    }
  | { kind: "literal"; value: MaybeValue; literal: Value; path: string }
  | {
      kind: "missingField" | "extraField";
      field: string;
      object: ObjectValue;
      validator: ObjectValidatorJSON;
      path: string;
    }
  | {
      kind: "otherTable";
      id: string;
      foundTable: string;
      tableName: string;
      path: string;
    }
  | { kind: "systemTable"; id: string; tableName: string; path: string };

const MAX_INT64 = 2n ** 63n - 1n;

/** Returns null when `value` matches, or the backend-style message for the first problem. */
export function validateValue(
  validator: ValidatorJSON,
  value: MaybeValue,
  opts: ValidateOptions = {},
): string | null {
  const failure = check(validator, value, opts.path ?? "", opts);
  return failure === null ? null : renderFailure(failure);
}

/**
 * Validates a call's single argument object against `fn.exportArgs()` JSON.
 * `{"type":"any"}` (no `args` declared) accepts anything. Messages get the
 * `ArgumentValidationError: ` prefix the backend adds in
 * `crates/isolate/src/environment/helpers/validation.rs`.
 */
export function validateArgs(
  exportArgsJson: string,
  args: Value,
  opts: ValidateOptions = {},
): string | null {
  const validator = parseValidatorJson(exportArgsJson, "args");
  if (validator === null || validator.type === "any") return null;
  if (validator.type !== "object") {
    throw new Error(
      `Args validator must be an object or any, got ${formatValidator(validator)}`,
    );
  }
  if (!isObjectValue(args)) {
    return (
      "ArgumentValidationError: Expected to receive an object as the function's " +
      `argument. Instead received: ${displayValue(args)}`
    );
  }
  const error = validateValue(validator, args, opts);
  return error === null ? null : `ArgumentValidationError: ${error}`;
}

/**
 * Validates a function's result against `fn.exportReturns()` JSON, where
 * `"null"` means no `returns` validator. An `undefined` result is checked as
 * `null`, which is what the function's invoke wrapper sends back.
 */
export function validateReturns(
  exportReturnsJson: string,
  value: MaybeValue,
  opts: ValidateOptions = {},
): string | null {
  const validator = parseValidatorJson(exportReturnsJson, "returns");
  if (validator === null) return null;
  const error = validateValue(
    validator,
    value === undefined ? null : value,
    opts,
  );
  return error === null ? null : `ReturnsValidationError: ${error}`;
}

/** Whether an exported validator JSON (`exportArgs` / `exportReturns`) declares one (not `null`). */
export function hasValidator(exportJson: string): boolean {
  return parseValidatorJson(exportJson, "returns") !== null;
}

/** Parsed validators by their JSON; an app has a bounded set of them. */
const parsedValidators = new Map<string, ValidatorJSON | null>();

function parseValidatorJson(json: string, what: string): ValidatorJSON | null {
  const cached = parsedValidators.get(json);
  if (cached !== undefined) return cached;
  const validator = parseValidatorJsonUncached(json, what);
  if (parsedValidators.size >= 10_000) parsedValidators.clear();
  parsedValidators.set(json, validator);
  return validator;
}

function parseValidatorJsonUncached(
  json: string,
  what: string,
): ValidatorJSON | null {
  const parsed: unknown = JSON.parse(json);
  if (parsed === null) return null;
  if (
    typeof parsed !== "object" ||
    typeof (parsed as { type?: unknown }).type !== "string"
  ) {
    throw new Error(`Invalid ${what} validator JSON: ${json}`);
  }
  return parsed as ValidatorJSON;
}

/** Prints a validator in `v.xxx()` form, like the backend's `impl Display for Validator`. */
export function formatValidator(validator: ValidatorJSON): string {
  switch (validator.type) {
    case "id":
      return `v.id("${validator.tableName}")`;
    case "null":
      return "v.null()";
    case "number":
      return "v.float64()";
    case "bigint":
      return "v.int64()";
    case "commitTs":
      return "v.commitTs()";
    case "boolean":
      return "v.boolean()";
    case "string":
      return "v.string()";
    case "bytes":
      return "v.bytes()";
    case "any":
      return "v.any()";
    case "literal":
      return `v.literal(${formatLiteral(jsonToConvex(validator.value))})`;
    case "array":
      return `v.array(${formatValidator(validator.value)})`;
    case "record":
      return `v.record(${formatValidator(validator.keys)}, ${formatField(validator.values)})`;
    case "object": {
      const fields = Object.keys(validator.value)
        .sort()
        .map((name) => `${name}: ${formatField(validator.value[name])}`);
      return `v.object({${fields.join(", ")}})`;
    }
    case "union":
      return `v.union(${validator.value.map(formatValidator).join(", ")})`;
    default:
      validator satisfies never;
      throw unsupported(validator);
  }
}

function formatField(field: {
  fieldType: ValidatorJSON;
  optional: boolean;
}): string {
  const inner = formatValidator(field.fieldType);
  return field.optional ? `v.optional(${inner})` : inner;
}

// `impl Display for LiteralValidator`: JSON where possible, `<bigint>` for
// int64 and `<number>` for non-finite floats.
function formatLiteral(literal: Value): string {
  if (typeof literal === "bigint") return "<bigint>";
  if (typeof literal === "number") return formatFloatJson(literal);
  return JSON.stringify(literal);
}

function unsupported(validator: unknown): Error {
  return new Error(`Unsupported validator: ${JSON.stringify(validator)}`);
}

// The backend validates pending values with every commit-timestamp placeholder
// resolved to an int64 (`check_pending_args`, `MAX_COMMIT_TS`); treat it as
// the largest int64, as `compareValues` does.
function isInt64(value: MaybeValue): boolean {
  return typeof value === "bigint" || value instanceof CommitTsPlaceholder;
}

function sameValue(a: MaybeValue, b: MaybeValue): boolean {
  const normalize = (v: MaybeValue) =>
    v instanceof CommitTsPlaceholder ? MAX_INT64 : v;
  return compareValues(normalize(a), normalize(b)) === 0;
}

function definedKeys(object: ObjectValue): string[] {
  return Object.keys(object)
    .filter((key) => object[key] !== undefined)
    .sort();
}

function check(
  validator: ValidatorJSON,
  value: MaybeValue,
  path: string,
  opts: ValidateOptions,
): Failure | null {
  const noMatch: Failure = { kind: "noMatch", value, validator, path };
  switch (validator.type) {
    case "any":
      return value === undefined ? noMatch : null;
    case "null":
      return value === null ? null : noMatch;
    case "number":
      return typeof value === "number" ? null : noMatch;
    case "bigint":
    case "commitTs":
      return isInt64(value) ? null : noMatch;
    case "boolean":
      return typeof value === "boolean" ? null : noMatch;
    case "string":
      return typeof value === "string" ? null : noMatch;
    case "bytes":
      return value instanceof ArrayBuffer ? null : noMatch;
    case "literal": {
      const literal = jsonToConvex(validator.value);
      return value !== undefined && sameValue(value, literal)
        ? null
        : { kind: "literal", value, literal, path };
    }
    case "id":
      return typeof value === "string"
        ? checkId(validator.tableName, value, noMatch, opts)
        : noMatch;
    case "array": {
      if (!Array.isArray(value)) return noMatch;
      for (let i = 0; i < value.length; i++) {
        const failure = check(validator.value, value[i], `${path}[${i}]`, opts);
        if (failure !== null) return failure;
      }
      return null;
    }
    case "record": {
      if (!isObjectValue(value)) return noMatch;
      for (const key of definedKeys(value)) {
        const keyFailure = check(validator.keys, key, `${path}.keys()`, opts);
        if (keyFailure !== null) return keyFailure;
        const valueFailure = check(
          validator.values.fieldType,
          value[key],
          `${path}.values()`,
          opts,
        );
        if (valueFailure !== null) return valueFailure;
      }
      return null;
    }
    case "object":
      return isObjectValue(value)
        ? checkObject(validator, value, path, opts)
        : noMatch;
    case "union":
      return checkUnion(validator.value, validator, value, path, opts);
    default:
      validator satisfies never;
      throw unsupported(validator);
  }
}

// `Validator::Id`: a string that is not an ID of a known table fails as a
// plain mismatch; an ID of another table names the table it came from.
function checkId(
  tableName: string,
  id: string,
  noMatch: Failure,
  opts: ValidateOptions,
): Failure | null {
  if (opts.tableNameOfId !== undefined) {
    const foundTable = opts.tableNameOfId(id);
    if (foundTable === null) return noMatch;
    if (foundTable === tableName) return null;
    return foundTable.startsWith("_")
      ? { kind: "systemTable", id, tableName, path: noMatch.path }
      : { kind: "otherTable", id, foundTable, tableName, path: noMatch.path };
  }
  if (opts.isTableId !== undefined)
    return opts.isTableId(tableName, id) ? null : noMatch;
  return null;
}

// `ObjectValidator::check_object`: declared fields in name order, then extra
// fields in name order; the first problem wins.
function checkObject(
  validator: ObjectValidatorJSON,
  object: ObjectValue,
  path: string,
  opts: ValidateOptions,
): Failure | null {
  for (const field of sortedFields(validator)) {
    const { fieldType, optional } = validator.value[field];
    const fieldValue = Object.hasOwn(object, field) ? object[field] : undefined;
    if (fieldValue !== undefined) {
      const failure = check(fieldType, fieldValue, `${path}.${field}`, opts);
      if (failure !== null) return failure;
    } else if (!optional) {
      return { kind: "missingField", field, object, validator, path };
    }
  }
  // Sorting the object's own fields is only needed to name the first extra one.
  for (const field of Object.keys(object)) {
    if (object[field] !== undefined && !Object.hasOwn(validator.value, field)) {
      const first = definedKeys(object).find(
        (key) => !Object.hasOwn(validator.value, key),
      )!;
      return { kind: "extraField", field: first, object, validator, path };
    }
  }
  return null;
}

/** An object validator's field names in name order, sorted once per validator (`parseValidatorJson` parses each JSON once). */
const sortedFieldsOf = new WeakMap<ObjectValidatorJSON, string[]>();

function sortedFields(validator: ObjectValidatorJSON): string[] {
  let fields = sortedFieldsOf.get(validator);
  if (fields === undefined) {
    fields = Object.keys(validator.value).sort();
    sortedFieldsOf.set(validator, fields);
  }
  return fields;
}

// `Validator::Union`: a one-member union reports its member's error; a union
// of objects sharing a literal field goes straight to the member whose
// literal matches; otherwise the first missing/extra-field error among the
// members is more useful than "does not match", which is the fallback.
function checkUnion(
  members: ValidatorJSON[],
  union: ValidatorJSON,
  value: MaybeValue,
  path: string,
  opts: ValidateOptions,
): Failure | null {
  if (members.length === 1) return check(members[0], value, path, opts);
  if (members.length > 1 && isObjectValue(value)) {
    const member = discriminatedMember(members, value);
    if (member !== undefined) return check(member, value, path, opts);
  }
  const failures: Failure[] = [];
  for (const member of members) {
    const failure = check(member, value, path, opts);
    if (failure === null) return null;
    failures.push(failure);
  }
  return (
    failures.find(
      (f) => f.kind === "missingField" || f.kind === "extraField",
    ) ?? {
      kind: "noMatch",
      value,
      validator: union,
      path,
    }
  );
}

// `shared_literal_discriminator`: the first field (in name order) that every
// member declares as a literal; a literal shared by two members keeps the first.
function discriminatedMember(
  members: ValidatorJSON[],
  value: ObjectValue,
): ValidatorJSON | undefined {
  const objects: ObjectValidatorJSON[] = [];
  for (const member of members) {
    if (member.type !== "object") return undefined;
    objects.push(member);
  }
  const common = Object.keys(objects[0].value)
    .sort()
    .filter((field) => objects.every((o) => Object.hasOwn(o.value, field)));
  for (const field of common) {
    const literals = objects.map((o) => o.value[field].fieldType);
    if (!literals.every((v) => v.type === "literal")) continue;
    const fieldValue = value[field];
    if (fieldValue === undefined) return undefined;
    const index = literals.findIndex(
      (v) =>
        v.type === "literal" && sameValue(fieldValue, jsonToConvex(v.value)),
    );
    return index === -1 ? undefined : objects[index];
  }
  return undefined;
}

function renderFailure(failure: Failure): string {
  const context = failure.path === "" ? "" : `Path: ${failure.path}`;
  switch (failure.kind) {
    case "noMatch":
      return (
        `Value does not match validator.\n${context}\n` +
        `Value: ${displayValue(failure.value)}\n` +
        `Validator: ${formatValidator(failure.validator)}`
      );
    case "literal":
      return (
        `\`${displayValue(failure.value)}\` does not match literal validator ` +
        `\`v.literal(${formatLiteral(failure.literal)})\`.${context}`
      );
    case "missingField":
      return (
        `Object is missing the required field \`${failure.field}\`. Consider wrapping ` +
        "the field validator in `v.optional(...)` if this is expected.\n" +
        `${context}\nObject: ${displayValue(failure.object)}\n` +
        `Validator: ${formatValidator(failure.validator)}`
      );
    case "extraField":
      return (
        `Object contains extra field \`${failure.field}\` that is not in the validator.\n` +
        `${context}\nObject: ${displayValue(failure.object)}\n` +
        `Validator: ${formatValidator(failure.validator)}`
      );
    case "otherTable":
      return (
        `Found ID "${failure.id}" from table \`${failure.foundTable}\`, which does not ` +
        `match the table name in validator \`v.id("${failure.tableName}")\`.${context}`
      );
    case "systemTable":
      return (
        `Found ID "${failure.id}" from a system table, which does not match the table ` +
        `name in validator \`v.id("${failure.tableName}")\`.${context}`
      );
    default:
      failure satisfies never;
      throw new Error("unreachable");
  }
}
