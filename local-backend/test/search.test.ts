/**
 * Text and vector search end to end on a fixture corpus: relevance order,
 * prefix matching on the last term, filters, the 1024-result limit, search
 * subscriptions re-running on matching writes, pagination, Convex's errors
 * (including staged indexes), and vector search against a brute-force
 * cosine reference.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { afterEach, describe, expect, test } from "vitest";
import { FunctionRunner } from "../src/functions/functionRunner.ts";
import { createIsolate } from "../src/functions/isolate.ts";
import { buildFunctions } from "../src/functions/loader.ts";
import { createSyscalls } from "../src/functions/syscalls.ts";
import { Database } from "../src/storage/database.ts";
import {
  rejection,
  startTestBackend,
  type TestBackend,
  waitFor,
} from "./helpers.ts";

const FILES_FIXTURE = fileURLToPath(
  new URL("./fixture-files/convex", import.meta.url),
);
const api = anyApi;

const harnesses: TestBackend[] = [];
afterEach(async () => {
  for (const harness of harnesses.splice(0)) await harness.stop();
});

async function start(): Promise<{
  harness: TestBackend;
  client: ConvexHttpClient;
}> {
  const harness = await startTestBackend({ functions: FILES_FIXTURE });
  harnesses.push(harness);
  return { harness, client: harness.httpClient() };
}

type DocInput = {
  title: string;
  body: string;
  channel: string;
  priority?: number;
};

function doc(
  title: string,
  body: string,
  channel = "general",
  priority?: number,
): DocInput {
  return priority === undefined
    ? { title, body, channel }
    : { title, body, channel, priority };
}

async function search(
  client: ConvexHttpClient,
  args: { text: string; channel?: string; priority?: number; limit?: number },
): Promise<string[]> {
  return (await client.query(api.search.search, args)) as string[];
}

describe("text search", () => {
  test("results come in BM25 order: frequent in a short body first, rare terms weigh more, ties newest first", async () => {
    const { client } = await start();
    await client.mutation(api.search.insertMany, {
      docs: [
        doc("once-long", "convex is one word among many other words in here"),
        doc("thrice-short", "convex convex convex"),
        doc("none", "nothing relevant at all"),
        doc("apple-only-1", "apple pie"),
        doc("apple-only-2", "apple tart"),
        doc("apple-only-3", "apple cake"),
        doc("banana", "banana bread"),
        doc("twin-old", "identical twins"),
        doc("twin-new", "identical twins"),
      ],
    });
    expect(await search(client, { text: "convex" })).toEqual([
      "thrice-short",
      "once-long",
    ]);
    // "banana" is in one document, "apple" in three: the rarer term scores higher.
    expect((await search(client, { text: "banana apple" }))[0]).toBe("banana");
    expect(await search(client, { text: "identical twins" })).toEqual([
      "twin-new",
      "twin-old",
    ]);
  });

  test("tokens are case-insensitive, split on punctuation, and only the last term matches as a prefix", async () => {
    const { client } = await start();
    await client.mutation(api.search.insertMany, {
      docs: [
        doc("greeting", "Hello, World! HELLO again."),
        doc("convo", "a long conversation"),
        doc("product", "Convex rocks"),
      ],
    });
    expect(await search(client, { text: "WORLD" })).toEqual(["greeting"]);
    expect((await search(client, { text: "conv" })).sort()).toEqual([
      "convo",
      "product",
    ]);
    // An exact match outranks a prefix match (prefix matches weigh half).
    expect(await search(client, { text: "rocks conv" })).toEqual([
      "product",
      "convo",
    ]);
    // "conv" is not the last term, so it must match a whole token.
    expect(await search(client, { text: "conv rocks" })).toEqual(["product"]);
    expect(await search(client, { text: "" })).toEqual([]);
    expect(await search(client, { text: "!!!" })).toEqual([]);
  });

  test("equality filters narrow the results", async () => {
    const { client } = await start();
    await client.mutation(api.search.insertMany, {
      docs: [
        doc("general-1", "release notes", "general", 1),
        doc("general-2", "release party", "general", 2),
        doc("random-1", "release candidate", "random", 1),
        doc("no-priority", "release date", "random"),
      ],
    });
    expect((await search(client, { text: "release" })).length).toBe(4);
    expect(
      (await search(client, { text: "release", channel: "general" })).sort(),
    ).toEqual(["general-1", "general-2"]);
    expect(
      await search(client, {
        text: "release",
        channel: "general",
        priority: 2,
      }),
    ).toEqual(["general-2"]);
    expect(
      (await search(client, { text: "release", priority: 1 })).sort(),
    ).toEqual(["general-1", "random-1"]);
    expect(
      await search(client, { text: "release", channel: "nowhere" }),
    ).toEqual([]);
  });

  test("a search returns at most 1024 documents", async () => {
    const { client } = await start();
    for (let batch = 0; batch < 3; batch++) {
      await client.mutation(api.search.insertMany, {
        docs: Array.from({ length: 400 }, (_, i) =>
          doc(`d${batch * 400 + i}`, `common word number ${batch * 400 + i}`),
        ),
      });
    }
    expect((await search(client, { text: "common" })).length).toBe(1024);
    expect((await search(client, { text: "common", limit: 5 })).length).toBe(5);
  });

  test("a mutation's search sees its own writes, and updates and deletes leave the index", async () => {
    const { client } = await start();
    const [id] = (await client.mutation(api.search.insertMany, {
      docs: [doc("old", "zebra crossing")],
    })) as string[];
    expect(
      await client.mutation(api.search.insertThenSearch, {
        title: "new",
        body: "zebra stripes zebra",
        text: "zebra",
      }),
    ).toEqual(["new", "old"]);
    await client.mutation(api.search.patchBody, { id, body: "lion" });
    expect(await search(client, { text: "zebra" })).toEqual(["new"]);
    expect(await search(client, { text: "lion" })).toEqual(["old"]);
    await client.mutation(api.search.remove, { id });
    expect(await search(client, { text: "lion" })).toEqual([]);
  });

  test("pagination walks the results in relevance order without gaps", async () => {
    const { client } = await start();
    await client.mutation(api.search.insertMany, {
      docs: Array.from({ length: 7 }, (_, i) =>
        doc(`p${i}`, `${"word ".repeat(i + 1)}filler`),
      ),
    });
    const all = await search(client, { text: "word" });
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 10; i++) {
      const page = (await client.query(api.search.searchPage, {
        text: "word",
        paginationOpts: { numItems: 3, cursor },
      })) as {
        page: { title: string }[];
        isDone: boolean;
        continueCursor: string;
      };
      seen.push(...page.page.map((d) => d.title));
      if (page.isDone) break;
      cursor = page.continueCursor;
    }
    expect(seen).toEqual(all);
    expect(seen.length).toBe(7);
  });

  test("a search subscription re-runs when a matching document is written", async () => {
    const { harness, client } = await start();
    await client.mutation(api.search.insertMany, {
      docs: [doc("first", "subscribe here")],
    });
    const live = harness.client();
    const updates: string[][] = [];
    live.onUpdate(api.search.search, { text: "subscribe" }, (titles) =>
      updates.push(titles as string[]),
    );
    await waitFor(() => updates.length === 1, "the first result");
    await client.mutation(api.search.insertMany, {
      docs: [doc("second", "please subscribe subscribe")],
    });
    await waitFor(
      () => updates.at(-1)?.length === 2,
      "the new document in the results",
    );
    expect(updates.at(-1)).toEqual(["second", "first"]);
  });

  test("searches Convex rejects fail with its errors, and staged indexes are not served", async () => {
    const { client } = await start();
    expect(
      (await rejection(client.query(api.search.wrongField, {}))).message,
    ).toContain(
      'Search query against documents.search_body contains a search filter against "title", which doesn\'t match the indexed `searchField` "body".',
    );
    expect(
      (await rejection(client.query(api.search.unindexedFilter, {}))).message,
    ).toContain(
      'Search query against documents.search_body contains an equality filter on "title" but that field isn\'t indexed for filtering in `filterFields`.',
    );
    expect(
      (await rejection(client.query(api.search.stagedSearch, {}))).message,
    ).toContain(
      "Index documents.search_title is currently backfilling and not available to query yet.",
    );
    expect(
      (await rejection(client.query(api.search.stagedIndex, {}))).message,
    ).toContain(
      "Index documents.by_channel is currently backfilling and not available to query yet.",
    );
  });
});

// ---- vector search -----------------------------------------------------------

/** A deterministic pseudo-random sequence (mulberry32), so failures reproduce. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

type Embedding = { vector: number[]; kind: string; n: number };

async function seedEmbeddings(
  client: ConvexHttpClient,
): Promise<{ id: string; doc: Embedding }[]> {
  const next = random(42);
  const docs: Embedding[] = Array.from({ length: 300 }, (_, i) => ({
    vector: Array.from({ length: 4 }, () => next() * 2 - 1),
    kind: ["cat", "dog", "fish"][i % 3],
    n: i % 5,
  }));
  const ids = (await client.mutation(api.vectors.insertMany, {
    docs,
  })) as string[];
  return ids.map((id, i) => ({ id, doc: docs[i] }));
}

function reference(
  rows: { id: string; doc: Embedding }[],
  query: number[],
  limit: number,
  keep: (doc: Embedding) => boolean = () => true,
): { id: string; score: number }[] {
  return rows
    .filter((row) => keep(row.doc))
    .map((row) => ({ id: row.id, score: cosine(row.doc.vector, query) }))
    .sort((a, b) => b.score - a.score)
    .slice(0, limit);
}

type VectorResult = { _id: string; _score: number }[];

describe("vector search", () => {
  test("nearest neighbours by cosine similarity match a brute-force reference", async () => {
    const { client } = await start();
    const rows = await seedEmbeddings(client);
    const next = random(7);
    for (let q = 0; q < 5; q++) {
      const query = Array.from({ length: 4 }, () => next() * 2 - 1);
      const results = (await client.action(api.vectors.search, {
        vector: query,
      })) as VectorResult;
      const expected = reference(rows, query, 10);
      expect(results.map((r) => r._id)).toEqual(expected.map((r) => r.id));
      for (const [i, r] of results.entries())
        expect(r._score).toBeCloseTo(expected[i].score, 5);
    }
    const many = (await client.action(api.vectors.search, {
      vector: [1, 0, 0, 0],
      limit: 256,
    })) as VectorResult;
    expect(many.map((r) => r._id)).toEqual(
      reference(rows, [1, 0, 0, 0], 256).map((r) => r.id),
    );
  });

  test("filters with q.eq and q.or keep only matching documents", async () => {
    const { client } = await start();
    const rows = await seedEmbeddings(client);
    const query = [0.3, -0.2, 0.9, 0.1];
    const cats = (await client.action(api.vectors.search, {
      vector: query,
      kinds: ["cat"],
      limit: 20,
    })) as VectorResult;
    expect(cats.map((r) => r._id)).toEqual(
      reference(rows, query, 20, (d) => d.kind === "cat").map((r) => r.id),
    );
    const either = (await client.action(api.vectors.search, {
      vector: query,
      kinds: ["dog", "fish"],
      n: 0,
      limit: 50,
    })) as VectorResult;
    expect(either.map((r) => r._id)).toEqual(
      reference(
        rows,
        query,
        50,
        (d) => d.kind === "dog" || d.kind === "fish" || d.n === 0,
      ).map((r) => r.id),
    );
  });

  test("limits, dimensions and staged indexes fail with Convex's errors", async () => {
    const { client } = await start();
    await seedEmbeddings(client);
    expect(
      (
        await rejection(
          client.action(api.vectors.search, {
            vector: [1, 0, 0, 0],
            limit: 257,
          }),
        )
      ).message,
    ).toContain("Vector queries can fetch at most 256 results, requested 257.");
    expect(
      (
        await rejection(
          client.action(api.vectors.search, { vector: [1, 0, 0] }),
        )
      ).message,
    ).toContain("Expected a vector with dimensions 4, received 3.");
    expect(
      (
        await rejection(
          client.action(api.vectors.search, {
            vector: [1, 0, 0, 0],
            index: "by_vector_staged",
          }),
        )
      ).message,
    ).toContain(
      "Index embeddings.by_vector_staged is currently backfilling and not available to query yet.",
    );
  });
});

describe("search at a snapshot", () => {
  test("a search has no outcome at a snapshot once commits land after it, since search indexes are read as they are now", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "search-snapshot-"));
    const db = Database.open(dir);
    const runner = new FunctionRunner(db);
    try {
      const isolate = createIsolate(await buildFunctions(FILES_FIXTURE), {
        convex: createSyscalls({ db, nested: runner.nested }),
        env: {},
        onStrayLog: () => undefined,
      });
      await db.prepareSchema(isolate.schema);
      db.setSchema(isolate.schema);
      runner.setIsolate(isolate);
      const insert = (title: string, body: string) =>
        runner.runMutation({
          path: "search:insertMany",
          args: { docs: [doc(title, body)] },
        });
      await insert("first", "pinned words");
      const request = { path: "search:search", args: { text: "pinned" } };
      const pinned = runner.pinSnapshot()!;
      try {
        // Nothing committed since the pin: the latest index is the snapshot's.
        expect(await pinned.run(request)).toMatchObject({
          status: "success",
          value: ["first"],
          ts: pinned.ts,
        });
        await insert("second", "pinned words too");
        // The index now shows a later state than the snapshot: no outcome
        // rather than a mixed one (the caller runs it the ordinary way).
        expect(await pinned.run(request)).toBeNull();
      } finally {
        pinned.release();
      }
      // Both, in BM25 order (the shorter body first).
      expect(await runner.runQuery(request)).toMatchObject({
        value: ["first", "second"],
      });
    } finally {
      runner.close();
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
