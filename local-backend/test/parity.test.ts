/// <reference types="vite/client" />
/**
 * Parity with convex-test: each scenario runs the same calls against
 * `convexTest(schema, modules)` and against the local backend over
 * `ConvexHttpClient`, and the two transcripts must match once IDs and creation
 * times are replaced by their first-seen order.
 *
 * Where convex-test is known to differ from Convex, the scenarios stay off
 * that ground: error messages (only ConvexError data is compared), ordered
 * filter comparisons across types (convex-test uses JS `<`), bigints in the
 * data of a ConvexError thrown by a nested call (convex-test decodes it
 * twice and throws a plain Error), and `isDone` on a
 * page that ends exactly at the last row (convex-test peeks ahead; the
 * transcript keeps the pages, not the extra empty one).
 */
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { ConvexError, type Value } from "convex/values";
import { convexTest } from "convex-test";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import schema from "./fixture/convex/schema.ts";
import { startTestBackend, type TestBackend } from "./helpers.ts";

/** convex-test finds the functions' root from the "_generated" key; the fixture has no codegen. */
const modules = {
  "./fixture/convex/_generated/api.js": () => Promise.resolve({}),
  ...import.meta.glob("./fixture/convex/**/*.ts"),
};

const MAX_PAGES = 50;

type Args = Record<string, Value>;
type Caller = {
  query(name: string, args: Args): Promise<Value>;
  mutation(name: string, args: Args): Promise<Value>;
};
type Outcome = { value: Value } | { convexError: Value } | { error: "Error" };
type Entry = { call: string; args: Args; outcome: Outcome };

/** Records every call and its outcome; failures are data, not exceptions. */
class Transcript {
  readonly entries: Entry[] = [];
  constructor(private readonly caller: Caller) {}

  async query(name: string, args: Args = {}): Promise<Value | undefined> {
    return await this.#call("query", name, args);
  }

  async mutation(name: string, args: Args = {}): Promise<Value | undefined> {
    return await this.#call("mutation", name, args);
  }

  /** Pages through a paginated query, recording the pages and whether it ended. */
  async pages(name: string, args: Args, numItems: number): Promise<void> {
    const pages: Value[][] = [];
    let cursor: string | null = null;
    let done = false;
    for (let i = 0; i < MAX_PAGES && !done; i++) {
      const result = (await this.caller.query(name, {
        ...args,
        paginationOpts: { numItems, cursor },
      })) as { page: Value[]; isDone: boolean; continueCursor: string };
      pages.push(result.page);
      done = result.isDone;
      cursor = result.continueCursor;
    }
    if (pages.length > 1 && pages[pages.length - 1].length === 0) pages.pop();
    this.entries.push({
      call: `pages of ${name} by ${numItems}`,
      args,
      outcome: { value: { pages, done } },
    });
  }

  async #call(
    kind: "query" | "mutation",
    name: string,
    args: Args,
  ): Promise<Value | undefined> {
    try {
      const value = await this.caller[kind](name, args);
      this.entries.push({ call: name, args, outcome: { value } });
      return value;
    } catch (error) {
      this.entries.push({
        call: name,
        args,
        outcome:
          error instanceof ConvexError
            ? { convexError: (error as ConvexError<Value>).data }
            : { error: "Error" },
      });
      return undefined;
    }
  }
}

function convexTestCaller(): Caller {
  const t = convexTest(schema, modules);
  return {
    query: (name, args) => t.query(makeFunctionReference<"query">(name), args),
    mutation: (name, args) =>
      t.mutation(makeFunctionReference<"mutation">(name), args),
  };
}

function localCaller(http: ConvexHttpClient): Caller {
  return {
    query: (name, args) =>
      http.query(makeFunctionReference<"query">(name), args),
    mutation: (name, args) =>
      http.mutation(makeFunctionReference<"mutation">(name), args),
  };
}

/**
 * Replaces each document ID by "id#k" and each `_creationTime` by "time#k",
 * k counting distinct values in order of first appearance, so two runs
 * compare equal exactly when they agree on which documents are which.
 */
function normalize(entries: Entry[]): unknown {
  const ids = new Set<string>();
  const collect = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(collect);
    else if (
      v !== null &&
      typeof v === "object" &&
      !(v instanceof ArrayBuffer)
    ) {
      for (const [key, field] of Object.entries(v)) {
        if (key === "_id" && typeof field === "string") ids.add(field);
        collect(field);
      }
    }
  };
  for (const entry of entries) {
    collect(entry.outcome);
    if (entry.call.endsWith(":insert") && "value" in entry.outcome) {
      ids.add(entry.outcome.value as string);
    }
  }
  const idNames = new Map<string, string>();
  const timeNames = new Map<number, string>();
  const rewrite = (v: unknown, key?: string): unknown => {
    if (typeof v === "string" && ids.has(v)) {
      if (!idNames.has(v)) idNames.set(v, `id#${idNames.size}`);
      return idNames.get(v);
    }
    if (key === "_creationTime" && typeof v === "number") {
      if (!timeNames.has(v)) timeNames.set(v, `time#${timeNames.size}`);
      return timeNames.get(v);
    }
    if (Array.isArray(v)) return v.map((x) => rewrite(x));
    if (v !== null && typeof v === "object" && !(v instanceof ArrayBuffer)) {
      return Object.fromEntries(
        Object.entries(v).map(([k, x]) => [k, rewrite(x, k)]),
      );
    }
    return v;
  };
  return entries.map((entry) => rewrite(entry));
}

let h: TestBackend;

beforeEach(async () => {
  h = await startTestBackend();
});

afterEach(async () => {
  await h.stop();
});

/** Runs `scenario` on both implementations and compares the transcripts. */
async function expectParity(
  scenario: (t: Transcript) => Promise<void>,
): Promise<void> {
  const reference = new Transcript(convexTestCaller());
  await scenario(reference);
  const local = new Transcript(localCaller(h.httpClient()));
  await scenario(local);
  expect(normalize(local.entries)).toEqual(normalize(reference.entries));
}

const ITEMS: Args[] = [
  { group: "a", rank: 1, value: 1 },
  { group: "a", rank: 2, value: 1n },
  { group: "a", rank: 3, value: "1" },
  { group: "a", rank: 4, value: null },
  { group: "a", rank: 5 },
  { group: "a", rank: 6, value: true },
  { group: "a", rank: 7, value: [1, 2] },
  { group: "b", rank: 2, value: "x" },
  { group: "b", rank: 1, value: 2.5 },
  { group: "b", rank: 2, value: false },
  { group: "c", rank: -1, value: 0 },
  { group: "c", rank: 10, value: -3.25 },
];

async function insertItems(t: Transcript): Promise<string[]> {
  const ids: string[] = [];
  for (const item of ITEMS) {
    ids.push((await t.mutation("items:insert", item)) as string);
  }
  return ids;
}

describe("parity with convex-test", () => {
  test("inserts and full scans in both orders", async () => {
    await expectParity(async (t) => {
      await insertItems(t);
      await t.query("items:all");
      await t.query("items:all", { order: "desc" });
      await t.query("items:count");
    });
  });

  test("index ranges with eq, gt, gte, lt and lte", async () => {
    await expectParity(async (t) => {
      await insertItems(t);
      await t.query("items:range", { group: "a" });
      await t.query("items:range", { group: "a", above: 2 });
      await t.query("items:range", { group: "a", below: 4 });
      await t.query("items:range", { group: "a", above: 2, below: 6 });
      await t.query("items:range", {
        group: "a",
        above: 2,
        below: 6,
        inclusive: true,
      });
      await t.query("items:range", { group: "a", above: 3, order: "desc" });
      await t.query("items:range", { group: "b" });
      await t.query("items:range", { group: "c", above: -5, below: 0 });
      await t.query("items:range", { group: "nope" });
      await t.query("items:groupsBetween", { after: "a", before: "c" });
      await t.query("items:groupsBetween", { after: "", before: "z" });
      await t.query("items:groupsBetween", { after: "c", before: "a" });
    });
  });

  test("filters comparing values of mixed types", async () => {
    await expectParity(async (t) => {
      await insertItems(t);
      for (const value of [1, 1n, "1", null, true, false, [1, 2], 2.5, "x"]) {
        await t.query("items:whereValue", { op: "eq", value });
      }
      await t.query("items:whereValue", { op: "eq" });
      await t.query("items:whereValue", { op: "neq" });
      await t.query("items:whereValue", { op: "neq", value: 1 });
      await t.query("items:whereValue", { op: "neq", value: null });
      await t.query("items:whereMixed", { min: 5, text: "x" });
      await t.query("items:whereMixed", { min: 100, text: "1" });
    });
  });

  test("order, take, first and unique", async () => {
    await expectParity(async (t) => {
      await insertItems(t);
      for (const order of ["asc", "desc"]) {
        await t.query("items:take", { group: "a", count: 3, order });
        await t.query("items:take", { group: "a", count: 100, order });
        await t.query("items:take", { group: "a", count: 0, order });
        await t.query("items:first", { group: "b", order });
        await t.query("items:first", { group: "nope", order });
      }
      await t.query("items:unique", { group: "a", rank: 3 });
      await t.query("items:unique", { group: "a", rank: 99 });
      await t.query("items:unique", { group: "b", rank: 2 });
      await t.query("messages:list", { count: 2 });
    });
  });

  test("pagination with several page sizes", async () => {
    await expectParity(async (t) => {
      await insertItems(t);
      for (const numItems of [1, 2, 3, 7, 8]) {
        await t.pages("items:page", { group: "a" }, numItems);
        await t.pages("items:page", { group: "a", order: "desc" }, numItems);
      }
      await t.pages("items:page", {}, 4);
      await t.pages("items:page", { order: "desc" }, 5);
      await t.pages("items:page", { group: "nope" }, 3);
    });
  });

  test("patch, replace and delete", async () => {
    await expectParity(async (t) => {
      const [first, second, third] = await insertItems(t);
      await t.mutation("items:patch", { id: first, rank: 100 });
      await t.mutation("items:patch", { id: first, value: "patched" });
      await t.mutation("items:patch", { id: second, clearValue: true });
      await t.mutation("items:replace", {
        id: third,
        group: "z",
        rank: 0,
      });
      await t.query("items:get", { id: third });
      await t.mutation("items:remove", { id: second });
      await t.query("items:get", { id: second });
      await t.mutation("items:patch", { id: second, rank: 1 });
      await t.mutation("items:remove", { id: second });
      await t.query("items:range", { group: "a" });
      await t.query("items:range", { group: "z" });
      await t.query("items:count");
    });
  });

  test("error data, and failed mutations leave nothing behind", async () => {
    await expectParity(async (t) => {
      await insertItems(t);
      await t.mutation("items:insertThenFail", {
        group: "rolled back",
        data: {
          code: "ROLLED_BACK",
          n: 5n,
          nested: { list: [1, "two", null] },
        },
      });
      await t.mutation("items:insertThenFail", {
        group: "rolled back",
        data: "just a string",
      });
      await t.mutation("items:insertInvalid");
      await t.mutation("messages:fail");
      await t.mutation("messages:crash");
      await t.query("messages:failQuery");
      await t.query("items:range", { group: "rolled back" });
      await t.query("items:range", { group: "bad" });
      await t.query("items:count");
    });
  });

  test("reads inside a mutation see its own inserts, patches and deletes", async () => {
    await expectParity(async (t) => {
      await insertItems(t);
      await t.mutation("items:writeThenRead", { group: "w" });
      await t.query("items:range", { group: "w" });
      await t.query("items:all", { order: "desc" });
    });
  });

  test("nested mutations share the transaction and roll back only their own writes", async () => {
    await expectParity(async (t) => {
      // JSON-safe data: convex-test decodes a nested ConvexError's data twice, so
      // a bigint there turns it into a plain Error (the local-only test covers bigints).
      await t.mutation("items:nestedWrites", {
        group: "n",
        data: { code: "NESTED", at: [3, "three"] },
      });
      await t.query("items:range", { group: "n" });
      await t.mutation("items:nestedUncaught", { group: "u" });
      await t.query("items:range", { group: "u" });
    });
  });

  test("legacy one-argument db.get and normalizeId", async () => {
    await expectParity(async (t) => {
      const [itemId] = await insertItems(t);
      const messageId = await t.mutation("messages:send", {
        author: "a",
        body: "b",
      });
      await t.query("messages:get", { id: messageId as string });
      await t.query("messages:get", { id: itemId });
      await t.query("messages:get", { id: "not an id" });
    });
  });

  test("special floats keep their identity through storage, indexes and filters", async () => {
    await expectParity(async (t) => {
      for (const rank of [1.5, Infinity, -0, NaN, 0, -Infinity, 2 ** 53 + 2]) {
        await t.mutation("items:insert", { group: "f", rank, value: rank });
      }
      await t.query("items:range", { group: "f" });
      await t.query("items:range", { group: "f", order: "desc" });
      await t.query("items:range", { group: "f", above: -0 });
      await t.query("items:range", { group: "f", below: 0 });
      await t.query("items:range", { group: "f", above: 0, inclusive: true });
      for (const value of [0, -0, NaN, Infinity]) {
        await t.query("items:whereValue", { op: "eq", value });
      }
    });
  });

  test("read-modify-write mutations", async () => {
    await expectParity(async (t) => {
      for (let i = 0; i < 5; i++) {
        await t.mutation("counters:increment", { name: "n", by: i });
      }
      await t.mutation("counters:increment", { name: "other" });
      await t.query("counters:get", { name: "n" });
      await t.query("counters:get", { name: "other" });
      await t.query("counters:get", { name: "missing" });
    });
  });
});
