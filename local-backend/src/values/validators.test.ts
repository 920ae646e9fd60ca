import { describe, test, expect } from "vitest";
import { mutationGeneric } from "convex/server";
import {
  jsonToConvex,
  v,
  type GenericValidator,
  type PropertyValidators,
  type ValidatorJSON,
} from "convex/values";
import {
  formatValidator,
  validateArgs,
  validateReturns,
  validateValue,
  type ValidateOptions,
} from "./validators.ts";

// Validator JSON exactly as convex 1.48 produces it (`json` is @internal).
const json = (validator: GenericValidator): ValidatorJSON =>
  (validator as unknown as { json: ValidatorJSON }).json;

type Exported = { exportArgs(): string; exportReturns(): string };
function exported(
  args?: PropertyValidators,
  returns?: GenericValidator,
): Exported {
  const definition =
    returns === undefined
      ? { args, handler: () => null }
      : { args, returns, handler: () => null };
  return mutationGeneric(definition as never) as unknown as Exported;
}

const check = (
  validator: GenericValidator,
  value: unknown,
  opts?: ValidateOptions,
) => validateValue(json(validator), value as never, opts);

const bytes = (...values: number[]) => Uint8Array.from(values).buffer;
const commitTs = jsonToConvex({ $commitTs: null });

const USERS_ID = "users-id";
const POSTS_ID = "posts-id";
const STORAGE_ID = "storage-id";
const tableNameOfId = (id: string) =>
  ({ [USERS_ID]: "users", [POSTS_ID]: "posts", [STORAGE_ID]: "_storage" })[
    id
  ] ?? null;

describe("leaf validators", () => {
  test("accept their own type", () => {
    expect(check(v.null(), null)).toBeNull();
    expect(check(v.number(), 1.5)).toBeNull();
    expect(check(v.float64(), NaN)).toBeNull();
    expect(check(v.float64(), -Infinity)).toBeNull();
    expect(check(v.int64(), -(2n ** 63n))).toBeNull();
    expect(check(v.boolean(), false)).toBeNull();
    expect(check(v.string(), "")).toBeNull();
    expect(check(v.bytes(), bytes(1, 2))).toBeNull();
  });

  test("refuse other types with the backend's message", () => {
    expect(check(v.string(), 1)).toBe(
      "Value does not match validator.\n\nValue: 1.0\nValidator: v.string()",
    );
    expect(check(v.null(), undefined)).toBe(
      "Value does not match validator.\n\nValue: undefined\nValidator: v.null()",
    );
    expect(check(v.boolean(), "true")).toMatch(
      /Value: "true"\nValidator: v.boolean\(\)$/,
    );
    expect(check(v.bytes(), "AQI=")).toMatch(/Validator: v.bytes\(\)$/);
    expect(check(v.bytes(), Uint8Array.of(1))).toMatch(
      /Validator: v.bytes\(\)$/,
    );
    expect(check(v.null(), bytes(1, 2, 3))).toMatch(/Value: b"AQID"/);
  });

  test("int64 and float64 never stand in for each other", () => {
    expect(check(v.int64(), 1)).toBe(
      "Value does not match validator.\n\nValue: 1.0\nValidator: v.int64()",
    );
    expect(check(v.float64(), 1n)).toBe(
      "Value does not match validator.\n\nValue: 1\nValidator: v.float64()",
    );
    expect(check(v.number(), 1n)).not.toBeNull();
    expect(check(v.int64(), 1n)).toBeNull();
  });

  test("any accepts every value", () => {
    for (const value of [
      null,
      1,
      1n,
      "",
      false,
      bytes(),
      [1],
      { a: { b: [] } },
      commitTs,
    ]) {
      expect(check(v.any(), value)).toBeNull();
    }
  });

  test("commitTs accepts int64s and the placeholder, which also passes as an int64", () => {
    expect(json(v.commitTs())).toEqual({ type: "commitTs" });
    expect(check(v.commitTs(), 5n)).toBeNull();
    expect(check(v.commitTs(), commitTs)).toBeNull();
    expect(check(v.int64(), commitTs)).toBeNull();
    expect(check(v.commitTs(), 5)).toMatch(/Validator: v.commitTs\(\)$/);
    expect(check(v.float64(), commitTs)).toMatch(/Validator: v.float64\(\)$/);
  });
});

describe("literals", () => {
  test("match a value of the same type only", () => {
    expect(check(v.literal("a"), "a")).toBeNull();
    expect(check(v.literal(1), 1)).toBeNull();
    expect(check(v.literal(1n), 1n)).toBeNull();
    expect(check(v.literal(true), true)).toBeNull();
    expect(check(v.literal(1), 1n)).toBe(
      "`1` does not match literal validator `v.literal(1.0)`.",
    );
    expect(check(v.literal(1n), 1)).toBe(
      "`1.0` does not match literal validator `v.literal(<bigint>)`.",
    );
  });

  test("print like the backend, with the path appended", () => {
    expect(check(v.literal("a"), "b")).toBe(
      '`"b"` does not match literal validator `v.literal("a")`.',
    );
    expect(check(v.literal(false), null)).toBe(
      "`null` does not match literal validator `v.literal(false)`.",
    );
    expect(check(v.object({ kind: v.literal(2.5) }), { kind: 3 })).toBe(
      "`3.0` does not match literal validator `v.literal(2.5)`.Path: .kind",
    );
  });
});

describe("ids", () => {
  test("without a table lookup any string passes", () => {
    expect(check(v.id("users"), "anything")).toBeNull();
    expect(check(v.id("users"), 1)).toBe(
      'Value does not match validator.\n\nValue: 1.0\nValidator: v.id("users")',
    );
  });

  test("with isTableId the ID must belong to the table", () => {
    const isTableId = (table: string, id: string) =>
      tableNameOfId(id) === table;
    expect(check(v.id("users"), USERS_ID, { isTableId })).toBeNull();
    expect(check(v.id("users"), POSTS_ID, { isTableId })).toBe(
      'Value does not match validator.\n\nValue: "posts-id"\nValidator: v.id("users")',
    );
  });

  test("with tableNameOfId an ID of another table names that table", () => {
    expect(check(v.id("users"), USERS_ID, { tableNameOfId })).toBeNull();
    expect(check(v.id("users"), POSTS_ID, { tableNameOfId })).toBe(
      'Found ID "posts-id" from table `posts`, which does not match the table name in validator `v.id("users")`.',
    );
    expect(
      check(
        v.object({ author: v.id("users") }),
        { author: STORAGE_ID },
        { tableNameOfId },
      ),
    ).toBe(
      'Found ID "storage-id" from a system table, which does not match the table name in validator ' +
        '`v.id("users")`.Path: .author',
    );
    expect(check(v.id("users"), "not-an-id", { tableNameOfId })).toBe(
      'Value does not match validator.\n\nValue: "not-an-id"\nValidator: v.id("users")',
    );
  });
});

describe("arrays", () => {
  test("check every element and report the first bad one with its index", () => {
    expect(check(v.array(v.string()), [])).toBeNull();
    expect(check(v.array(v.string()), ["a", "b"])).toBeNull();
    expect(check(v.array(v.string()), ["a", 2, 3])).toBe(
      "Value does not match validator.\nPath: [1]\nValue: 2.0\nValidator: v.string()",
    );
    expect(check(v.array(v.string()), "a")).toMatch(
      /Validator: v.array\(v.string\(\)\)$/,
    );
  });
});

describe("objects", () => {
  const message = v.object({
    body: v.string(),
    author: v.id("users"),
    tags: v.optional(v.array(v.string())),
  });

  test("accept a matching object with or without optional fields", () => {
    expect(check(message, { body: "hi", author: USERS_ID })).toBeNull();
    expect(
      check(message, { body: "hi", author: USERS_ID, tags: undefined }),
    ).toBeNull();
    expect(
      check(message, { body: "hi", author: USERS_ID, tags: ["x"] }),
    ).toBeNull();
  });

  test("refuse a missing required field", () => {
    expect(check(message, { author: USERS_ID })).toBe(
      "Object is missing the required field `body`. Consider wrapping the field validator in " +
        "`v.optional(...)` if this is expected.\n\n" +
        'Object: {author: "users-id"}\n' +
        'Validator: v.object({author: v.id("users"), body: v.string(), tags: v.optional(v.array(v.string()))})',
    );
    expect(check(message, { body: undefined, author: USERS_ID })).toMatch(
      /missing the required field `body`/,
    );
  });

  test("refuse an extra field", () => {
    expect(check(v.object({ a: v.string() }), { a: "x", zzz: 1n })).toBe(
      "Object contains extra field `zzz` that is not in the validator.\n\n" +
        'Object: {a: "x", zzz: 1}\nValidator: v.object({a: v.string()})',
    );
  });

  test("check declared fields in name order before extra fields", () => {
    const validator = v.object({ b: v.string(), a: v.string() });
    expect(check(validator, { a: 1, b: 2, c: 3 })).toMatch(
      /^Value does not match validator.\nPath: .a\n/,
    );
    expect(check(validator, { b: "x", c: 3 })).toMatch(
      /missing the required field `a`/,
    );
  });

  test("nested paths reach the bad value", () => {
    const validator = v.object({
      outer: v.object({ items: v.array(v.object({ name: v.string() })) }),
    });
    expect(
      check(validator, { outer: { items: [{ name: "a" }, { name: 1n }] } }),
    ).toBe(
      "Value does not match validator.\nPath: .outer.items[1].name\nValue: 1\nValidator: v.string()",
    );
    expect(check(validator, { outer: { items: [{}] } })).toMatch(
      /missing the required field `name`.*\nPath: .outer.items\[0\]\nObject: \{\}/s,
    );
  });

  test("refuse non-objects", () => {
    expect(check(v.object({}), [])).toBe(
      "Value does not match validator.\n\nValue: []\nValidator: v.object({})",
    );
    expect(check(v.object({}), null)).not.toBeNull();
    expect(check(v.object({}), bytes())).not.toBeNull();
    expect(check(v.object({}), {})).toBeNull();
  });

  test("the path option prefixes every path", () => {
    expect(
      check(v.object({ a: v.string() }), { a: 1 }, { path: ".doc" }),
    ).toMatch(/\nPath: .doc.a\n/);
  });
});

describe("records", () => {
  test("check string keys and every value", () => {
    const validator = v.record(v.string(), v.number());
    expect(check(validator, {})).toBeNull();
    expect(check(validator, { a: 1, b: 2 })).toBeNull();
    expect(check(validator, { a: 1, b: "x" })).toBe(
      'Value does not match validator.\nPath: .values()\nValue: "x"\nValidator: v.float64()',
    );
    expect(check(validator, [])).toBe(
      "Value does not match validator.\n\nValue: []\nValidator: v.record(v.string(), v.float64())",
    );
  });

  test("check ID keys", () => {
    const validator = v.record(v.id("users"), v.boolean());
    expect(
      check(validator, { [USERS_ID]: true }, { tableNameOfId }),
    ).toBeNull();
    expect(
      check(validator, { [USERS_ID]: true, hello: true }, { tableNameOfId }),
    ).toBe(
      'Value does not match validator.\nPath: .keys()\nValue: "hello"\nValidator: v.id("users")',
    );
  });

  test("check keys from a union of literals", () => {
    const validator = v.record(
      v.union(v.literal("a"), v.literal("b")),
      v.int64(),
    );
    expect(check(validator, { a: 1n, b: 2n })).toBeNull();
    expect(check(validator, { c: 1n })).toBe(
      'Value does not match validator.\nPath: .keys()\nValue: "c"\nValidator: v.union(v.literal("a"), v.literal("b"))',
    );
  });

  test("nested inside objects keep the full path", () => {
    const validator = v.object({
      scores: v.record(v.string(), v.array(v.number())),
    });
    expect(check(validator, { scores: { ann: [1, 2n] } })).toMatch(
      /\nPath: .scores.values\(\)\[1\]\n/,
    );
  });

  test("optional values may be absent", () => {
    const validator: ValidatorJSON = {
      type: "record",
      keys: { type: "string" },
      values: { fieldType: { type: "string" }, optional: true } as never,
    };
    expect(validateValue(validator, { a: "x", b: undefined })).toBeNull();
    expect(validateValue(validator, { a: 1 })).toMatch(/Path: .values\(\)/);
    expect(formatValidator(validator)).toBe(
      "v.record(v.string(), v.optional(v.string()))",
    );
  });
});

describe("unions", () => {
  test("accept a value matching any member", () => {
    const validator = v.union(v.string(), v.int64(), v.null());
    for (const value of ["a", 1n, null])
      expect(check(validator, value)).toBeNull();
    expect(check(validator, 1)).toBe(
      "Value does not match validator.\n\nValue: 1.0\nValidator: v.union(v.string(), v.int64(), v.null())",
    );
  });

  test("a one-member union reports its member's error", () => {
    expect(check(v.union(v.object({ a: v.string() })), { a: 1 })).toMatch(
      /^Value does not match validator.\nPath: .a\n/,
    );
  });

  test("a union of objects with a shared literal field checks the matching member", () => {
    const shape = v.union(
      v.object({ kind: v.literal("circle"), radius: v.number() }),
      v.object({ kind: v.literal("square"), side: v.number() }),
    );
    expect(check(shape, { kind: "square", side: 2 })).toBeNull();
    expect(check(shape, { kind: "square", side: "2" })).toBe(
      'Value does not match validator.\nPath: .side\nValue: "2"\nValidator: v.float64()',
    );
    expect(check(shape, { kind: "triangle" })).toMatch(
      /^Value does not match validator.\n\nValue: \{kind: "triangle"\}/,
    );
  });

  test("otherwise a missing or extra field is reported before a plain mismatch", () => {
    const validator = v.union(
      v.string(),
      v.object({ a: v.string(), b: v.string() }),
    );
    expect(check(validator, { a: "x" })).toMatch(
      /^Object is missing the required field `b`/,
    );
    expect(check(validator, { a: "x", b: "y", c: "z" })).toMatch(
      /^Object contains extra field `c`/,
    );
    expect(check(validator, { a: 1, b: "y" })).toMatch(
      /^Value does not match validator.\n\nValue: \{a: 1.0, b: "y"\}/,
    );
  });

  test("an optional union field may be absent", () => {
    expect(
      check(v.object({ x: v.optional(v.union(v.string(), v.null())) }), {}),
    ).toBeNull();
  });
});

describe("formatValidator", () => {
  test("prints like the backend's Display", () => {
    expect(formatValidator(json(v.id("tableName")))).toBe('v.id("tableName")');
    expect(formatValidator(json(v.literal(123)))).toBe("v.literal(123.0)");
    expect(formatValidator(json(v.literal(123n)))).toBe("v.literal(<bigint>)");
    expect(formatValidator(json(v.literal("abc")))).toBe('v.literal("abc")');
    expect(formatValidator(json(v.literal(true)))).toBe("v.literal(true)");
    expect(formatValidator(json(v.array(v.string())))).toBe(
      "v.array(v.string())",
    );
    expect(
      formatValidator(
        json(
          v.object({ required: v.string(), optional: v.optional(v.float64()) }),
        ),
      ),
    ).toBe(
      "v.object({optional: v.optional(v.float64()), required: v.string()})",
    );
    expect(formatValidator(json(v.union(v.string(), v.float64())))).toBe(
      "v.union(v.string(), v.float64())",
    );
    expect(formatValidator(json(v.record(v.string(), v.bytes())))).toBe(
      "v.record(v.string(), v.bytes())",
    );
    expect(formatValidator(json(v.any()))).toBe("v.any()");
    expect(formatValidator(json(v.null()))).toBe("v.null()");
    expect(formatValidator(json(v.boolean()))).toBe("v.boolean()");
    expect(formatValidator(json(v.int64()))).toBe("v.int64()");
  });

  test("refuses unknown validator types", () => {
    expect(() => formatValidator({ type: "set" } as never)).toThrow(
      /Unsupported validator/,
    );
    expect(() => validateValue({ type: "map" } as never, 1)).toThrow(
      /Unsupported validator/,
    );
  });
});

describe("validateArgs", () => {
  test("functions without args accept anything", () => {
    const fn = exported();
    expect(fn.exportArgs()).toBe('{"type":"any"}');
    expect(validateArgs(fn.exportArgs(), { anything: [1n] })).toBeNull();
  });

  test("checks the argument object and prefixes the error", () => {
    const fn = exported({ body: v.string(), count: v.optional(v.int64()) });
    expect(validateArgs(fn.exportArgs(), { body: "hi" })).toBeNull();
    expect(validateArgs(fn.exportArgs(), { body: "hi", count: 2n })).toBeNull();
    expect(validateArgs(fn.exportArgs(), { body: "hi", count: 2 })).toBe(
      "ArgumentValidationError: Value does not match validator.\nPath: .count\nValue: 2.0\nValidator: v.int64()",
    );
    expect(validateArgs(fn.exportArgs(), { body: "hi", extra: true })).toMatch(
      /^ArgumentValidationError: Object contains extra field `extra` that is not in the validator.\n/,
    );
    expect(validateArgs(fn.exportArgs(), {})).toMatch(
      /^ArgumentValidationError: Object is missing the required field `body`/,
    );
  });

  test("empty args refuse any field", () => {
    const fn = exported({});
    expect(validateArgs(fn.exportArgs(), {})).toBeNull();
    expect(validateArgs(fn.exportArgs(), { a: 1 })).toMatch(/extra field `a`/);
  });

  test("refuses a non-object argument", () => {
    const fn = exported({ a: v.string() });
    expect(validateArgs(fn.exportArgs(), [1, 2])).toBe(
      "ArgumentValidationError: Expected to receive an object as the function's argument. Instead received: [1.0, 2.0]",
    );
  });

  test("passes the ID lookup through", () => {
    const fn = exported({ user: v.id("users") });
    expect(
      validateArgs(fn.exportArgs(), { user: POSTS_ID }, { tableNameOfId }),
    ).toMatch(
      /^ArgumentValidationError: Found ID "posts-id" from table `posts`.*\.Path: \.user$/,
    );
  });

  test("refuses an args validator that is neither an object nor any", () => {
    expect(() => validateArgs('{"type":"string"}', {})).toThrow(
      /must be an object or any/,
    );
    expect(() => validateArgs("{}", {})).toThrow(/Invalid args validator JSON/);
  });
});

describe("validateReturns", () => {
  test("no returns validator accepts anything", () => {
    const fn = exported({});
    expect(fn.exportReturns()).toBe("null");
    expect(validateReturns(fn.exportReturns(), { any: "thing" })).toBeNull();
  });

  test("checks the result and prefixes the error", () => {
    const fn = exported({}, v.array(v.object({ name: v.string() })));
    expect(validateReturns(fn.exportReturns(), [{ name: "a" }])).toBeNull();
    expect(validateReturns(fn.exportReturns(), [{ name: null }])).toBe(
      "ReturnsValidationError: Value does not match validator.\nPath: [0].name\nValue: null\nValidator: v.string()",
    );
  });

  test("an undefined result is checked as null", () => {
    expect(
      validateReturns(exported({}, v.null()).exportReturns(), undefined),
    ).toBeNull();
    expect(
      validateReturns(exported({}, v.string()).exportReturns(), undefined),
    ).toBe(
      "ReturnsValidationError: Value does not match validator.\n\nValue: null\nValidator: v.string()",
    );
  });
});
