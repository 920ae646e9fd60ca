/**
 * `npx tsx bench/search.ts`: text and vector search latency in the storage
 * layer (Database + Transaction, no network), each beside a baseline
 * measured in the same run on the same data:
 * - text search (take 10) vs. a full scan that tokenizes every document;
 * - vector search (limit 10) vs. brute-force cosine over in-memory arrays;
 * - commit cost of 100-document batches with and without the indexes.
 *
 * Usage: npx tsx bench/search.ts [-- --quick]
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  Database,
  type SchemaJson,
} from "../local-backend/src/storage/database.ts";
import {
  type SerializedQuery,
  Transaction,
} from "../local-backend/src/functions/transaction.ts";
import { vectorSearch } from "../local-backend/src/functions/vectorSearch.ts";
import { tokenize } from "../local-backend/src/query/textSearch.ts";
import { formatSummary, summarize } from "./stats.ts";

const QUICK = process.argv.includes("--quick");
const DOCS = QUICK ? 5_000 : 20_000;
const DIMENSIONS = 128;
const ROUNDS = QUICK ? 10 : 30;
const WORDS = Array.from({ length: 5000 }, (_, i) => `w${i.toString(36)}`);

function schema(indexed: boolean): SchemaJson {
  return {
    schemaValidation: false,
    tables: [
      {
        tableName: "notes",
        indexes: [],
        searchIndexes: indexed
          ? [
              {
                indexDescriptor: "s",
                searchField: "text",
                filterFields: ["tag"],
              },
            ]
          : [],
        documentType: { type: "any" },
      },
      {
        tableName: "vecs",
        indexes: [],
        vectorIndexes: indexed
          ? [
              {
                indexDescriptor: "v",
                vectorField: "v",
                dimensions: DIMENSIONS,
                filterFields: ["k"],
              },
            ]
          : [],
        documentType: { type: "any" },
      },
    ],
  };
}

/** Zipf-like word choice: a few very common words, a long tail of rare ones. */
function text(): string {
  return Array.from(
    { length: 20 },
    () => WORDS[Math.floor(Math.random() ** 2 * WORDS.length)],
  ).join(" ");
}

function fill(db: Database, vectors: number[][]): number[] {
  const commitMs: number[] = [];
  for (let batch = 0; batch < DOCS / 100; batch++) {
    const tx = new Transaction(db, { readOnly: false });
    for (let i = 0; i < 100; i++) {
      tx.insert("notes", { text: text(), tag: i % 4 === 0 ? "a" : "b" });
      tx.insert("vecs", { v: vectors[batch * 100 + i], k: i % 2 });
    }
    const start = performance.now();
    db.commit(tx.pendingWrites());
    commitMs.push(performance.now() - start);
  }
  return commitMs;
}

function time(fn: () => unknown): number[] {
  const samples: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const start = performance.now();
    fn();
    samples.push(performance.now() - start);
  }
  return samples;
}

function searchQuery(value: string): SerializedQuery {
  return {
    source: {
      type: "Search",
      indexName: "notes.s",
      filters: [{ type: "Search", fieldPath: "text", value }],
    },
    operators: [{ limit: 10 }],
  };
}

function main(): void {
  const vectors = Array.from({ length: DOCS }, () =>
    Array.from({ length: DIMENSIONS }, () => Math.random() - 0.5),
  );
  const dirs: string[] = [];
  const open = (indexed: boolean) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-search-"));
    dirs.push(dir);
    const db = Database.open(dir);
    db.setSchema(schema(indexed));
    return db;
  };
  const plain = open(false);
  const indexed = open(true);
  const plainCommits = fill(plain, vectors);
  const indexedCommits = fill(indexed, vectors);
  console.log(
    formatSummary(
      `commit, 100 docs, no search indexes (baseline)`,
      summarize(plainCommits),
    ),
  );
  console.log(
    formatSummary(
      `commit, 100 docs, text + vector index`,
      summarize(indexedCommits),
    ),
  );

  for (const [label, term] of [
    ["common term", WORDS[0]],
    ["rare term", WORDS[4000]],
    ["prefix", "w1"],
  ] as const) {
    const scan = time(() => {
      const tx = new Transaction(indexed, { readOnly: true });
      const found = [];
      for (const doc of tx.stream({
        source: { type: "FullTableScan", tableName: "notes", order: null },
        operators: [],
      })) {
        if (tokenize(doc.text as string).some((t) => t.startsWith(term)))
          found.push(doc);
      }
      tx.close();
      return found;
    });
    const search = time(() => {
      const tx = new Transaction(indexed, { readOnly: true });
      const rows = [...tx.stream(searchQuery(term))];
      tx.close();
      return rows;
    });
    console.log(
      formatSummary(
        `text, ${label}, full scan + tokenize, ${DOCS} docs (baseline)`,
        summarize(scan),
      ),
    );
    console.log(
      formatSummary(
        `text, ${label}, withSearchIndex take 10, ${DOCS} docs`,
        summarize(search),
      ),
    );
  }

  const query = Array.from({ length: DIMENSIONS }, () => Math.random() - 0.5);
  const brute = time(() =>
    vectors
      .map((v, i) => {
        let dot = 0;
        let a = 0;
        let b = 0;
        for (let d = 0; d < DIMENSIONS; d++) {
          dot += v[d] * query[d];
          a += v[d] * v[d];
          b += query[d] * query[d];
        }
        return { i, score: dot / Math.sqrt(a * b) };
      })
      .sort((x, y) => y.score - x.score)
      .slice(0, 10),
  );
  const indexedVector = time(() =>
    vectorSearch(indexed, {
      indexName: "vecs.v",
      vector: query,
      limit: 10,
      expressions: null,
    }),
  );
  console.log(
    formatSummary(
      `vector, brute force in memory, ${DOCS} x ${DIMENSIONS} (baseline)`,
      summarize(brute),
    ),
  );
  console.log(
    formatSummary(
      `vector, vectorSearch limit 10, ${DOCS} x ${DIMENSIONS}`,
      summarize(indexedVector),
    ),
  );
  plain.close();
  indexed.close();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
}

main();
