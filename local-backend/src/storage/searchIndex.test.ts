import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { type SerializedQuery, Transaction } from "../functions/transaction.ts";
import { compileSearch, tokenize } from "../query/textSearch.ts";
import { cutAfterSpin } from "../../test/watchdogCut.ts";
import { Database, type SchemaJson } from "./database.ts";
import { BACKFILL_CHUNK_DOCS } from "./derivedIndexes.ts";

const dirs: string[] = [];
const open: Database[] = [];
afterEach(() => {
  for (const db of open.splice(0)) db.close();
  for (const dir of dirs.splice(0))
    fs.rmSync(dir, { recursive: true, force: true });
});

function openDb(dir: string): Database {
  const db = Database.open(dir);
  open.push(db);
  return db;
}

const schema: SchemaJson = {
  tables: [
    {
      tableName: "notes",
      indexes: [],
      searchIndexes: [
        {
          indexDescriptor: "search_text",
          searchField: "text",
          filterFields: ["tag"],
        },
      ],
      documentType: { type: "any" },
    },
  ],
  schemaValidation: false,
};

const definition = {
  table: "notes",
  name: "search_text",
  searchField: "text",
  filterFields: ["tag"],
};

function insert(db: Database, text: string, tag = "a"): string {
  const tx = new Transaction(db, { readOnly: false });
  const id = tx.insert("notes", { text, tag });
  db.commit(tx.pendingWrites());
  return id;
}

/**
 * Runs `search` (host code inside a function's window, as a search syscall
 * is) under a 1 ms watchdog after a random spin, up to 200 times or until
 * 20 cuts; V8's watchdog ends it at any call (no catch, no finally), as when
 * the machine stalls. `check` runs after every round. Returns the cuts.
 */
function cutRepeatedly(search: () => void, check: () => void): number {
  let cuts = 0;
  for (let round = 0; round < 200 && cuts < 20; round++) {
    if (cutAfterSpin(search, Math.random() * 1.5)) cuts++;
    check();
  }
  return cuts;
}

function searchQuery(text: string): SerializedQuery {
  return {
    source: {
      type: "Search",
      indexName: "notes.search_text",
      filters: [{ type: "Search", fieldPath: "text", value: text }],
    },
    operators: [],
  };
}

describe("tokenize", () => {
  test("splits on non-alphanumerics, lowercases, and drops tokens of 32 bytes or more", () => {
    expect(tokenize("Hello, wörld! 42x_y")).toEqual([
      "hello",
      "wörld",
      "42x",
      "y",
    ]);
    expect(tokenize(`${"a".repeat(31)} ${"b".repeat(32)} ok`)).toEqual([
      "a".repeat(31),
      "ok",
    ]);
    // 16 two-byte characters are 32 bytes: dropped.
    expect(tokenize("é".repeat(16))).toEqual([]);
    expect(tokenize("ΣΑΣ")).toEqual(["σασ"]);
  });

  test("a query keeps 16 terms and only the last is a prefix", () => {
    const words = Array.from({ length: 20 }, (_, i) => `w${i}`).join(" ");
    const { terms } = compileSearch(definition, [
      { type: "Search", fieldPath: "text", value: words },
    ]);
    expect(terms.length).toBe(16);
    expect(terms.filter((t) => t.prefix)).toEqual([
      { text: "w15", prefix: true },
    ]);
  });
});

describe("search index storage", () => {
  test("entries are on disk with their documents: a reopened database answers without a rebuild", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-test-"));
    dirs.push(dir);
    const first = openDb(dir);
    first.setSchema(schema);
    const id = insert(first, "durable words");
    insert(first, "other text");
    first.close();
    open.splice(open.indexOf(first), 1);

    const second = openDb(dir);
    // No setSchema: whatever answers comes from the tables on disk.
    const compiled = compileSearch(definition, [
      { type: "Search", fieldPath: "text", value: "durable" },
    ]);
    expect(
      second.textSearch.search(definition, compiled).hits.map((h) => h.id),
    ).toEqual([id]);
    expect(second.textSearch.stats(definition)).toEqual({
      numDocs: 2,
      numTokens: 4,
    });
  });

  test("a search the watchdog cuts while it reads postings leaves the connection usable: the next search and commit succeed", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-test-"));
    dirs.push(dir);
    const db = openDb(dir);
    db.setSchema(schema);
    const tx = new Transaction(db, { readOnly: false });
    for (let i = 0; i < 5_000; i++)
      tx.insert("notes", { text: `common word ${i}`, tag: "a" });
    db.commit(tx.pendingWrites());
    const compiled = compileSearch(definition, [
      { type: "Search", fieldPath: "text", value: "common" },
    ]);
    const cuts = cutRepeatedly(
      () => db.textSearch.search(definition, compiled),
      () =>
        expect(db.textSearch.search(definition, compiled).hits).toHaveLength(
          1024,
        ),
    );
    expect(cuts).toBeGreaterThan(0);
    insert(db, "common after the cuts");
  });

  test("a vector search the watchdog cuts while it reads entries leaves the connection usable too", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-test-"));
    dirs.push(dir);
    const db = openDb(dir);
    const vectors = {
      table: "points",
      name: "by_embedding",
      vectorField: "embedding",
      dimensions: 4,
      filterFields: [],
    };
    db.setSchema({
      tables: [
        {
          tableName: "points",
          indexes: [],
          vectorIndexes: [
            {
              indexDescriptor: vectors.name,
              vectorField: vectors.vectorField,
              dimensions: vectors.dimensions,
              filterFields: [],
            },
          ],
          documentType: { type: "any" },
        },
      ],
      schemaValidation: false,
    });
    const tx = new Transaction(db, { readOnly: false });
    for (let i = 0; i < 5_000; i++)
      tx.insert("points", { embedding: [1, i % 7, i % 11, i % 13] });
    db.commit(tx.pendingWrites());
    const cuts = cutRepeatedly(
      () => db.vectorSearch.search(vectors, [1, 2, 3, 4], 10, []),
      () =>
        expect(
          db.vectorSearch.search(vectors, [1, 2, 3, 4], 10, []),
        ).toHaveLength(10),
    );
    expect(cuts).toBeGreaterThan(0);
    const after = new Transaction(db, { readOnly: false });
    after.insert("points", { embedding: [0, 0, 0, 1] });
    db.commit(after.pendingWrites());
  });

  test("an index added to the schema is built from existing documents; a removed one is dropped", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-test-"));
    dirs.push(dir);
    const db = openDb(dir);
    const id = insert(db, "written before the index existed");
    db.setSchema(schema);
    const compiled = compileSearch(definition, [
      { type: "Search", fieldPath: "text", value: "before" },
    ]);
    expect(
      db.textSearch.search(definition, compiled).hits.map((h) => h.id),
    ).toEqual([id]);
    db.setSchema({
      ...schema,
      tables: [{ ...schema.tables[0], searchIndexes: [] }],
    });
    expect(db.textSearch.search(definition, compiled).hits).toEqual([]);
    expect(db.textSearch.stats(definition)).toEqual({
      numDocs: 0,
      numTokens: 0,
    });
  });

  test("q.eq(field, undefined) matches documents without the field", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-test-"));
    dirs.push(dir);
    const db = openDb(dir);
    db.setSchema(schema);
    insert(db, "tagged text", "a");
    const tx = new Transaction(db, { readOnly: false });
    const untagged = tx.insert("notes", { text: "untagged text" });
    db.commit(tx.pendingWrites());
    const compiled = compileSearch(definition, [
      { type: "Search", fieldPath: "text", value: "text" },
      { type: "Eq", fieldPath: "tag", value: { $undefined: null } },
    ]);
    expect(
      db.textSearch.search(definition, compiled).hits.map((h) => h.id),
    ).toEqual([untagged]);
  });

  test("a search's read set covers matching writes only", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-test-"));
    dirs.push(dir);
    const db = openDb(dir);
    db.setSchema(schema);
    insert(db, "alpha beta");
    const tx = new Transaction(db, { readOnly: true });
    expect([...tx.stream(searchQuery("alp"))].length).toBe(1);
    const change = (text: string, tag = "a") => ({
      table: "notes",
      id: "x",
      before: null,
      after: { _id: "x", _creationTime: 1, text, tag },
    });
    expect(tx.readSet.overlaps([change("gamma")])).toBe(false);
    expect(tx.readSet.overlaps([change("alphabet soup")])).toBe(true);
    expect(tx.readSet.overlaps([{ ...change("beta"), table: "other" }])).toBe(
      false,
    );
  });
});

describe("backfill", () => {
  const notes = (count: number) =>
    Array.from({ length: count }, (_, i) => `note w${i}x common`);

  test("a backfill cut short by a restart resumes after its last chunk, and commits meanwhile are kept", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-test-"));
    dirs.push(dir);
    const first = openDb(dir);
    first.setSchema({
      ...schema,
      tables: [{ ...schema.tables[0], searchIndexes: [] }],
    });
    const ids = notes(1000).map((text) => insert(first, text));
    let before = 0;
    await expect(
      first.prepareSchema(schema, {
        progress: (_index, documents) => {
          before += documents;
          // A restart after the first chunk: what is on disk is what a kill leaves.
          first.close();
        },
      }),
    ).rejects.toThrow("A newer schema replaced this one");
    open.splice(open.indexOf(first), 1);
    expect(before).toBeGreaterThan(0);
    expect(before).toBeLessThanOrEqual(BACKFILL_CHUNK_DOCS);

    const second = openDb(dir);
    const tx = new Transaction(second, { readOnly: false });
    tx.insert("notes", { text: "fresh common", tag: "a" });
    tx.patch(ids[1], { text: "patched common" });
    tx.delete(ids[2]);
    second.commit(tx.pendingWrites());
    let after = 0;
    await second.prepareSchema(schema, {
      progress: (_index, documents) => (after += documents),
    });
    second.setSchema(schema);
    // Only what the first run had not reached is read again.
    expect(after).toBeGreaterThanOrEqual(1000 - before - 1);
    expect(after).toBeLessThanOrEqual(1000 - before + 1);
    const hits = (text: string) =>
      second.textSearch
        .search(
          definition,
          compileSearch(definition, [
            { type: "Search", fieldPath: "text", value: text },
          ]),
        )
        .hits.map((h) => h.id);
    expect(hits("patched")).toEqual([ids[1]]);
    expect(hits("w1x")).toEqual([]);
    expect(hits("w2x")).toEqual([]);
    expect(hits("w3x")).toEqual([ids[3]]);
    expect(hits("fresh")).toHaveLength(1);
    expect(second.textSearch.stats(definition).numDocs).toBe(1000);
  });

  test("an installed index whose definition changed answers 'currently backfilling' until rebuilt, then serves commits made meanwhile", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-test-"));
    dirs.push(dir);
    const db = openDb(dir);
    db.setSchema(schema);
    for (const text of notes(500)) insert(db, text);
    const changed: SchemaJson = {
      ...schema,
      tables: [
        {
          ...schema.tables[0],
          searchIndexes: [
            {
              indexDescriptor: "search_text",
              searchField: "text",
              filterFields: [],
            },
          ],
        },
      ],
    };
    await db.prepareSchema(changed);
    db.setSchema(changed);
    const search = () => [
      ...new Transaction(db, { readOnly: true }).stream(searchQuery("fresh")),
    ];
    expect(search).toThrow(
      "Index notes.search_text is currently backfilling and not available to query yet.",
    );
    const id = insert(db, "fresh words");
    for (let i = 0; i < 10_000; i++) {
      try {
        search();
        break;
      } catch {
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    expect(search().map((d) => d._id)).toEqual([id]);
  });
});
