import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Value } from "convex/values";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { Database, type SchemaJson } from "../storage/database.ts";
import { encodeId, newInternalId } from "../values/ids.ts";
import type { Doc } from "../values/wire.ts";
import {
  type PageRequest,
  type SerializedQuery,
  Transaction,
} from "./transaction.ts";

let dir: string;
let db: Database;

const schema: SchemaJson = {
  tables: [
    {
      tableName: "messages",
      indexes: [{ indexDescriptor: "by_author", fields: ["author"] }],
      documentType: { type: "any" },
    },
  ],
  schemaValidation: false,
};

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "tx-test-"));
  db = Database.open(dir);
  db.setSchema(schema);
});
afterEach(() => {
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function seed(rows: Record<string, Value>[]): string[] {
  const tx = new Transaction(db, { readOnly: false });
  const ids = rows.map((row) => tx.insert("messages", row));
  db.commit(tx.pendingWrites());
  return ids;
}

const scan = (order: "asc" | "desc" = "asc"): SerializedQuery => ({
  source: { type: "FullTableScan", tableName: "messages", order },
  operators: [],
});

const byAuthor = (
  author: Value,
  order: "asc" | "desc" = "asc",
): SerializedQuery => ({
  source: {
    type: "IndexRange",
    indexName: "messages.by_author",
    range: [{ type: "Eq", fieldPath: "author", value: author }],
    order,
  },
  operators: [],
});

const bodies = (docs: Iterable<Doc>) => [...docs].map((d) => d.body);

describe("Transaction reads", () => {
  test("a transaction sees its own inserts, patches and deletes merged in index order", () => {
    const [a, , c] = seed([
      { author: "x", body: "1" },
      { author: "x", body: "2" },
      { author: "x", body: "3" },
    ]);
    const tx = new Transaction(db, { readOnly: false });
    tx.insert("messages", { author: "x", body: "4" });
    tx.patch(a, { body: "1*" });
    tx.delete(c);
    expect(bodies(tx.stream(scan()))).toEqual(["1*", "2", "4"]);
    expect(bodies(tx.stream(scan("desc")))).toEqual(["4", "2", "1*"]);
    // Nothing is visible outside until commit.
    expect(
      bodies(new Transaction(db, { readOnly: true }).stream(scan())),
    ).toEqual(["1", "2", "3"]);
  });

  test("an index range returns only matching rows, by creation time within a key", () => {
    seed([
      { author: "b", body: "b1" },
      { author: "a", body: "a1" },
      { author: "b", body: "b2" },
    ]);
    const tx = new Transaction(db, { readOnly: true });
    expect(bodies(tx.stream(byAuthor("b")))).toEqual(["b1", "b2"]);
    expect(bodies(tx.stream(byAuthor("b", "desc")))).toEqual(["b2", "b1"]);
    expect(bodies(tx.stream(byAuthor("c")))).toEqual([]);
  });

  test("a patch that moves a row to another index key moves it in range scans", () => {
    const [a] = seed([{ author: "a", body: "moves" }]);
    const tx = new Transaction(db, { readOnly: false });
    tx.patch(a, { author: "b" });
    expect(bodies(tx.stream(byAuthor("a")))).toEqual([]);
    expect(bodies(tx.stream(byAuthor("b")))).toEqual(["moves"]);
  });

  test("filters and limits apply after the index", () => {
    seed([1, 2, 3, 4, 5].map((n) => ({ author: "x", body: String(n), n })));
    const query: SerializedQuery = {
      ...scan(),
      operators: [
        { filter: { $gt: [{ $field: "n" }, { $literal: 2 }] } },
        { limit: 2 },
      ],
    };
    expect(
      bodies(new Transaction(db, { readOnly: true }).stream(query)),
    ).toEqual(["3", "4"]);
  });

  test("a query cannot write", () => {
    const tx = new Transaction(db, { readOnly: true });
    expect(() => tx.insert("messages", { body: "no" })).toThrow(
      /Queries cannot write/,
    );
  });

  test("a finished transaction refuses further use", () => {
    const tx = new Transaction(db, { readOnly: true });
    tx.close();
    expect(() => [...tx.stream(scan())]).toThrow(/already finished/);
  });

  test("a failed nested call drops only its own writes", () => {
    const tx = new Transaction(db, { readOnly: false });
    tx.insert("messages", { body: "outer" });
    const failed = tx.child(tx.root, "mutation");
    tx.insert("messages", { body: "inner, rolled back" }, failed);
    const kept = tx.child(tx.root, "mutation");
    tx.insert("messages", { body: "inner, kept" }, kept);
    tx.merge(kept);
    expect(bodies(tx.stream(scan()))).toEqual(["outer", "inner, kept"]);
  });

  test("concurrent nested calls and their caller each keep their own writes", () => {
    const tx = new Transaction(db, { readOnly: false });
    const first = tx.child(tx.root, "mutation");
    const second = tx.child(tx.root, "mutation");
    tx.insert("messages", { body: "first" }, first);
    tx.insert("messages", { body: "second, fails" }, second);
    tx.insert("messages", { body: "caller, meanwhile" });
    // A nested call sees its caller's writes, not its sibling's.
    expect(bodies(tx.stream(scan(), first))).toEqual([
      "first",
      "caller, meanwhile",
    ]);
    tx.merge(first);
    expect(bodies(tx.stream(scan()))).toEqual(["first", "caller, meanwhile"]);
  });

  test("a nested query cannot write and a stale-snapshot query sees committed state only", () => {
    seed([{ body: "committed" }]);
    const tx = new Transaction(db, { readOnly: false });
    tx.insert("messages", { body: "pending" });
    expect(() =>
      tx.insert("messages", { body: "no" }, tx.child(tx.root, "query")),
    ).toThrow(/Queries cannot write/);
    expect(
      bodies(tx.stream(scan(), tx.child(tx.root, "snapshotQuery"))),
    ).toEqual(["committed"]);
  });

  test("system fields cannot be changed and user fields cannot start with an underscore", () => {
    const [a] = seed([{ body: "x" }]);
    const tx = new Transaction(db, { readOnly: false });
    expect(() => tx.patch(a, { _creationTime: 1 })).toThrow(/system field/);
    expect(() => tx.insert("messages", { _secret: 1 })).toThrow(
      "Field '_secret' starts with an underscore, which is only allowed for system fields like '_id'",
    );
    tx.delete(a);
    expect(() => tx.patch(a, { body: "y" })).toThrow(
      `Update on nonexistent document ID ${a}`,
    );
  });

  test("a malformed id, an id of another table, or a system id through db fail with Convex's errors", () => {
    const [message] = seed([{ body: "x" }]);
    const tx = new Transaction(db, { readOnly: false });
    const userId = tx.insert("users", { name: "u" });
    const systemId = encodeId(2, newInternalId());
    expect(() => tx.get("not-an-id")).toThrow(
      "Invalid argument `id` for `db.get`: Unable to decode ID: Invalid ID length 9",
    );
    expect(() => tx.get("!".repeat(32))).toThrow(
      "Invalid argument `id` for `db.get`: Unable to decode ID: ID wasn't valid base32",
    );
    const corrupted =
      message.slice(0, 10) +
      (message[10] === "0" ? "1" : "0") +
      message.slice(11);
    expect(() => tx.get(corrupted)).toThrow(
      /^Invalid argument `id` for `db.get`: Unable to decode ID: Invalid ID version \d+ \(expected \d+\)$/,
    );
    expect(() => tx.get(message, "users")).toThrow(
      'Invalid argument `id` for `db.get`: expected to be an Id<"users">, got Id<"messages"> instead.',
    );
    expect(() => tx.patch(userId, { name: "v" }, "messages")).toThrow(
      'Invalid argument `id` for `db.patch`: expected to be an Id<"messages">, got Id<"users"> instead.',
    );
    expect(() => tx.replace("x", {}, "messages")).toThrow(
      "Invalid argument `id` for `db.replace`: Unable to decode ID",
    );
    expect(() => tx.delete(message, "users")).toThrow(
      "Invalid argument `id` for `db.delete`",
    );
    expect(() => tx.get(systemId, undefined, tx.root, "db")).toThrow(
      "System tables can only be accessed with db.system.",
    );
    expect(() => tx.delete(systemId, undefined, tx.root, "db")).toThrow(
      "System tables can only be accessed with db.system.",
    );
    expect(() => tx.get(message, undefined, tx.root, "db.system")).toThrow(
      "User tables cannot be accessed with db.system.",
    );
    expect(tx.get(systemId, undefined, tx.root, "db.system")).toBeNull();
    // A well-formed id of a table that does not exist reads as null.
    expect(tx.get(encodeId(9999, newInternalId()))).toBeNull();
    expect(tx.get(message, "messages")).toMatchObject({ body: "x" });
  });
});

describe("Transaction pagination", () => {
  test("pages are disjoint and cover the table in order", () => {
    seed(Array.from({ length: 25 }, (_, i) => ({ body: String(i) })));
    const tx = new Transaction(db, { readOnly: true });
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 10; page++) {
      const result = tx.page({
        query: scan("desc"),
        cursor,
        endCursor: null,
        pageSize: 10,
        maximumRowsRead: null,
      });
      seen.push(...bodies(result.page).map(String));
      cursor = result.continueCursor;
      if (result.isDone) break;
    }
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => String(24 - i)));
  });

  test("a page re-run with its end cursor grows with inserts instead of moving its boundary", () => {
    seed(Array.from({ length: 5 }, (_, i) => ({ body: String(i) })));
    const first = new Transaction(db, { readOnly: true }).page({
      query: scan("desc"),
      cursor: null,
      endCursor: null,
      pageSize: 3,
      maximumRowsRead: null,
    });
    expect(bodies(first.page)).toEqual(["4", "3", "2"]);
    seed([{ body: "5" }]);
    const rerun = new Transaction(db, { readOnly: true }).page({
      query: scan("desc"),
      cursor: null,
      endCursor: first.continueCursor,
      pageSize: 3,
      maximumRowsRead: null,
    });
    expect(bodies(rerun.page)).toEqual(["5", "4", "3", "2"]);
    expect(rerun.continueCursor).toBe(first.continueCursor);
    expect(rerun.splitCursor).not.toBeNull();
  });

  test("a cursor from another query is refused with InvalidCursor", () => {
    seed([{ author: "a", body: "1" }]);
    const tx = new Transaction(db, { readOnly: true });
    const page = tx.page({
      query: scan(),
      cursor: null,
      endCursor: null,
      pageSize: 1,
      maximumRowsRead: null,
    });
    expect(() =>
      tx.page({
        query: byAuthor("a"),
        cursor: page.continueCursor,
        endCursor: null,
        pageSize: 1,
        maximumRowsRead: null,
      }),
    ).toThrow(/InvalidCursor/);
    expect(() =>
      tx.page({
        query: scan(),
        cursor: "not a cursor",
        endCursor: null,
        pageSize: 1,
        maximumRowsRead: null,
      }),
    ).toThrow(/InvalidCursor/);
  });

  test("maximumRowsRead ends a page early", () => {
    seed(Array.from({ length: 10 }, (_, i) => ({ body: String(i) })));
    const result = new Transaction(db, { readOnly: true }).page({
      query: scan(),
      cursor: null,
      endCursor: null,
      pageSize: 8,
      maximumRowsRead: 3,
    });
    expect(bodies(result.page)).toEqual(["0", "1", "2"]);
    expect(result.isDone).toBe(false);
  });

  test("maximumRowsRead without an end cursor stops with SplitRequired and the next page continues without a gap", () => {
    seed(Array.from({ length: 10 }, (_, i) => ({ body: String(i) })));
    const tx = new Transaction(db, { readOnly: true });
    const first = tx.page(request(scan(), { pageSize: 8, maximumRowsRead: 3 }));
    expect(bodies(first.page)).toEqual(["0", "1", "2"]);
    expect(first.pageStatus).toBe("SplitRequired");
    const rest = tx.page(
      request(scan(), { cursor: first.continueCursor, pageSize: 8 }),
    );
    expect(bodies(rest.page)).toEqual(["3", "4", "5", "6", "7", "8", "9"]);
    // Filtered-out rows count as read.
    const filtered = tx.page(
      request(
        {
          ...scan(),
          operators: [
            {
              filter: {
                $eq: [{ $field: "body" }, { $literal: "2" }],
              },
            },
          ],
        },
        { pageSize: 8, maximumRowsRead: 2 },
      ),
    );
    expect(filtered.page).toEqual([]);
    expect(filtered.pageStatus).toBe("SplitRequired");
  });

  test("a range that ends exactly at maximumRowsRead is done, with a split only recommended", () => {
    seed(Array.from({ length: 3 }, (_, i) => ({ body: String(i) })));
    const result = new Transaction(db, { readOnly: true }).page(
      request(scan(), { pageSize: 8, maximumRowsRead: 3 }),
    );
    expect(bodies(result.page)).toEqual(["0", "1", "2"]);
    expect(result.isDone).toBe(true);
    // Over 3/4 of maximumRowsRead was read (`is_approaching_data_limit`).
    expect(result.pageStatus).toBe("SplitRecommended");
  });

  test("maximumBytesRead stops after the row that reaches it, reading at least one", () => {
    seed(
      Array.from({ length: 5 }, (_, i) => ({ body: String(i).repeat(1000) })),
    );
    const tx = new Transaction(db, { readOnly: true });
    const one = tx.page(request(scan(), { pageSize: 5, maximumBytesRead: 1 }));
    expect(one.page).toHaveLength(1);
    expect(one.pageStatus).toBe("SplitRequired");
    const two = tx.page(
      request(scan(), { pageSize: 5, maximumBytesRead: 1500 }),
    );
    expect(two.page).toHaveLength(2);
    expect(two.pageStatus).toBe("SplitRequired");
  });

  test("with an end cursor the read limits do not apply and the split cursor halves the page", () => {
    seed(Array.from({ length: 10 }, (_, i) => ({ body: String(i) })));
    const tx = new Transaction(db, { readOnly: true });
    const full = tx.page(request(scan(), { pageSize: 8 }));
    const limited = tx.page(
      request(scan(), {
        endCursor: full.continueCursor,
        pageSize: 8,
        maximumRowsRead: 3,
      }),
    );
    expect(bodies(limited.page)).toEqual(bodies(full.page));
    expect(limited.pageStatus).toBe("SplitRecommended");
    expect(limited.continueCursor).toBe(full.continueCursor);
    const firstHalf = tx.page(
      request(scan(), { endCursor: full.splitCursor, pageSize: 8 }),
    );
    const secondHalf = tx.page(
      request(scan(), {
        cursor: full.splitCursor,
        endCursor: full.continueCursor,
        pageSize: 8,
      }),
    );
    expect(firstHalf.page.length).toBeGreaterThan(0);
    expect(secondHalf.page.length).toBeGreaterThan(0);
    expect([...bodies(firstHalf.page), ...bodies(secondHalf.page)]).toEqual(
      bodies(full.page),
    );
  });

  test("numItems 0 and zero read limits fail with Convex's errors", () => {
    const tx = new Transaction(db, { readOnly: true });
    expect(() => tx.page(request(scan(), { pageSize: 0 }))).toThrow(
      "Must request at least 1 document while paginating",
    );
    expect(() =>
      tx.page(request(scan(), { pageSize: 1, maximumRowsRead: 0 })),
    ).toThrow("maximumRowsRead and maximumBytesRead must be greater than 0");
    expect(() =>
      tx.page(request(scan(), { pageSize: 1, maximumBytesRead: 0 })),
    ).toThrow("maximumRowsRead and maximumBytesRead must be greater than 0");
  });

  test("a cursor is tied to its order, range and filters, and is opaque", () => {
    seed([
      { author: "a", body: "1" },
      { author: "a", body: "2" },
      { author: "b", body: "3" },
    ]);
    const tx = new Transaction(db, { readOnly: true });
    const { continueCursor } = tx.page(request(byAuthor("a"), { pageSize: 1 }));
    expect(continueCursor).toMatch(/^[A-Za-z0-9_-]+$/);
    const others: SerializedQuery[] = [
      byAuthor("a", "desc"),
      byAuthor("b"),
      scan(),
      {
        ...byAuthor("a"),
        operators: [
          { filter: { $eq: [{ $field: "body" }, { $literal: "2" }] } },
        ],
      },
    ];
    for (const query of others) {
      expect(() =>
        tx.page(request(query, { cursor: continueCursor, pageSize: 1 })),
      ).toThrow(
        "InvalidCursor: Tried to run a query starting from a cursor, but it looks like this cursor is from a different query.",
      );
      expect(() =>
        tx.page(request(query, { endCursor: continueCursor, pageSize: 1 })),
      ).toThrow(/InvalidCursor/);
    }
    const next = tx.page(
      request(byAuthor("a"), { cursor: continueCursor, pageSize: 5 }),
    );
    expect(bodies(next.page)).toEqual(["2"]);
  });
});

function request(
  query: SerializedQuery,
  options: Partial<Omit<PageRequest, "query">> & { pageSize: number },
): PageRequest {
  return {
    query,
    cursor: null,
    endCursor: null,
    maximumRowsRead: null,
    maximumBytesRead: null,
    ...options,
  };
}
