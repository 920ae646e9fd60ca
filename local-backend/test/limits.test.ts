/**
 * Convex's transaction and value limits, each just under (passes) and just
 * over (fails with Convex's error, commits nothing), while the process and
 * other clients carry on. Texts from convex-backend `crates/database/src/
 * reads.rs` / `writes.rs`, `crates/common/src/document.rs`, `crates/value`,
 * `crates/isolate/src/environment/helpers/validation.rs` (see `limits.ts`).
 */
import { fileURLToPath } from "node:url";
import { anyApi } from "convex/server";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  api,
  rejection,
  startTestBackend,
  type TestBackend,
} from "./helpers.ts";

const limits = anyApi.limits;
const files = anyApi.search;
const FILES_FIXTURE = fileURLToPath(
  new URL("./fixture-files/convex", import.meta.url),
);
const MiB = 1 << 20;

let h: TestBackend;
beforeAll(async () => {
  h = await startTestBackend();
});
afterAll(async () => {
  await h.stop();
});

/** Another client is served right after a call failed on a limit. */
async function othersUnaffected(): Promise<void> {
  expect(await h.client().query(api.greeting.default, {})).toBe(
    "hello from the default export",
  );
}

describe("read limits", () => {
  test("32,000 documents may be read; the 32,001st fails with TooManyDocumentsRead", async () => {
    const http = h.httpClient();
    for (const count of [8_000, 8_000, 8_000, 8_001]) {
      await http.mutation(limits.fill, { author: "many", count, size: 1 });
    }
    expect(await http.query(limits.read, { author: "many", n: 32_000 })).toBe(
      32_000,
    );
    const error = await rejection(
      http.query(limits.read, { author: "many", n: 32_001 }),
    );
    expect(error.message).toContain(
      "Too many documents read in a single function execution (limit: 32000). Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a selective index range expressions.",
    );
    await othersUnaffected();
  });

  test("16 MiB may be read; more fails with TooManyBytesRead", async () => {
    const http = h.httpClient();
    await http.mutation(limits.fill, {
      author: "big",
      count: 16,
      size: 1_000_000,
    });
    await http.mutation(limits.fill, {
      author: "big",
      count: 1,
      size: 1_000_000,
    });
    expect(await http.query(limits.read, { author: "big", n: 16 })).toBe(16);
    const error = await rejection(
      http.query(limits.read, { author: "big", n: 17 }),
    );
    expect(error.message).toContain(
      "Too many bytes read in a single function execution (limit: 16777216 bytes).",
    );
    await othersUnaffected();
  });

  test("4,096 index ranges may be read; the 4,097th fails with TooManyReads", async () => {
    const http = h.httpClient();
    expect(await http.query(limits.ranges, { n: 4_096 })).toBe(4_096);
    const error = await rejection(http.query(limits.ranges, { n: 4_097 }));
    expect(error.message).toContain(
      "Too many reads in a single function execution (limit: 4096).",
    );
    await othersUnaffected();
  });
});

describe("search reads", () => {
  // Each text-search result is a document read, as in Convex; vector search
  // returns ids and scores only (an action reads documents through queries).
  let search: TestBackend;
  beforeAll(async () => {
    search = await startTestBackend({ functions: FILES_FIXTURE });
  });
  afterAll(async () => {
    await search.stop();
  });

  test("search results count as documents read: 31,000 scanned and 1,000 found pass, 1,001 found fail", async () => {
    const http = search.httpClient();
    for (const count of [8_000, 8_000, 8_000, 7_000])
      await http.mutation(files.fill, { word: "filler", count, padding: 0 });
    await http.mutation(files.fill, {
      word: "needle",
      count: 1_001,
      padding: 0,
    });
    expect(
      await http.query(files.readThenSearch, {
        n: 31_000,
        text: "needle",
        k: 1_000,
      }),
    ).toBe(32_000);
    const error = await rejection(
      http.query(files.readThenSearch, { n: 31_000, text: "needle", k: 1_001 }),
    );
    expect(error.message).toContain(
      "Too many documents read in a single function execution (limit: 32000).",
    );
    expect(
      await search.client().query(files.readThenSearch, {
        n: 0,
        text: "needle",
        k: 1,
      }),
    ).toBe(1);
  });

  test("search results count as bytes read: 16 documents of 1 MB pass, 17 fail", async () => {
    const http = search.httpClient();
    await http.mutation(files.fill, {
      word: "heavy",
      count: 16,
      padding: 1_000_000,
    });
    await http.mutation(files.fill, {
      word: "heavy",
      count: 1,
      padding: 1_000_000,
    });
    expect(
      await http.query(files.readThenSearch, { n: 0, text: "heavy", k: 16 }),
    ).toBe(16);
    const error = await rejection(
      http.query(files.readThenSearch, { n: 0, text: "heavy", k: 17 }),
    );
    expect(error.message).toContain(
      "Too many bytes read in a single function execution (limit: 16777216 bytes).",
    );
  });
});

describe("write limits", () => {
  test("16,000 documents may be written; the 16,001st fails and nothing commits", async () => {
    const http = h.httpClient();
    expect(
      await http.mutation(limits.fill, {
        author: "writes-ok",
        count: 16_000,
        size: 1,
      }),
    ).toBe(16_000);
    const error = await rejection(
      http.mutation(limits.fill, {
        author: "writes-over",
        count: 16_001,
        size: 1,
      }),
    );
    expect(error.message).toContain(
      "Too many writes in a single function execution (limit: 16000)",
    );
    expect(await http.query(limits.read, { author: "writes-over", n: 1 })).toBe(
      0,
    );
    await othersUnaffected();
  });

  test("16 MiB may be written; more fails and nothing commits", async () => {
    const http = h.httpClient();
    expect(
      await http.mutation(limits.fill, {
        author: "bytes-ok",
        count: 16,
        size: 1_000_000,
      }),
    ).toBe(16);
    const error = await rejection(
      http.mutation(limits.fill, {
        author: "bytes-over",
        count: 17,
        size: 1_000_000,
      }),
    );
    expect(error.message).toContain(
      "Too many bytes written in a single function execution (limit: 16777216 bytes)",
    );
    expect(await http.query(limits.read, { author: "bytes-over", n: 1 })).toBe(
      0,
    );
    await othersUnaffected();
  });
});

describe("document limits", () => {
  test("a document may be 1 MiB; a larger one is refused", async () => {
    const http = h.httpClient();
    await http.mutation(limits.storeString, {
      tag: "size-ok",
      size: 1_048_000,
    });
    const error = await rejection(
      http.mutation(limits.storeString, { tag: "size-over", size: MiB }),
    );
    expect(error.message).toMatch(
      /Value is too large \(1(\.\d+)? MiB > maximum size 1 MiB\)/,
    );
    expect(await http.query(limits.countBlobs, { tag: "size-over" })).toBe(0);
    await othersUnaffected();
  });

  test("an object may have 1,024 fields; 1,025 are refused", async () => {
    const http = h.httpClient();
    const fields = (n: number) =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, i]));
    await http.mutation(limits.store, { tag: "fields", value: fields(1_024) });
    const error = await rejection(
      http.mutation(limits.store, { tag: "fields", value: fields(1_025) }),
    );
    expect(error.message).toContain(
      "Object has too many fields (1025 > maximum number 1024)",
    );
    expect(await http.query(limits.countBlobs, { tag: "fields" })).toBe(1);
  });

  test("a document may nest 16 levels; 17 are refused", async () => {
    const http = h.httpClient();
    const nested = (depth: number): unknown =>
      depth === 0 ? 1 : [nested(depth - 1)];
    // The document itself is one level: {tag, value} around the value.
    await http.mutation(limits.store, { tag: "deep", value: nested(15) });
    const error = await rejection(
      http.mutation(limits.store, { tag: "deep", value: nested(16) }),
    );
    expect(error.message).toContain(
      "Document is too nested (nested 17 levels deep > maximum nesting 16)",
    );
    expect(await http.query(limits.countBlobs, { tag: "deep" })).toBe(1);
  });

  test("nested field names may not start with an underscore", async () => {
    const error = await rejection(
      h.httpClient().mutation(limits.store, {
        tag: "names",
        value: { _hidden: 1 },
      }),
    );
    expect(error.message).toContain(
      "Field '_hidden' starts with an underscore, which is not allowed for nested fields",
    );
  });
});

describe("arguments and return values", () => {
  test("arguments may be 16 MiB; larger ones are refused", async () => {
    const http = h.httpClient();
    const under = "x".repeat(16 * MiB - 100);
    expect(
      ((await http.query(limits.echo, { value: under })) as string).length,
    ).toBe(under.length);
    const error = await rejection(
      http.query(limits.echo, { value: "x".repeat(16 * MiB) }),
    );
    expect(error.message).toMatch(
      /Arguments for limits:echo are too large \(actual: 16(\.\d+)? MiB, limit: 16 MiB\)/,
    );
    await othersUnaffected();
  });

  test("a return value may be 16 MiB; a larger one fails", async () => {
    const http = h.httpClient();
    expect(
      ((await http.query(limits.big, { size: 16 * MiB - 10 })) as string)
        .length,
    ).toBe(16 * MiB - 10);
    const error = await rejection(http.query(limits.big, { size: 16 * MiB }));
    expect(error.message).toMatch(
      /Function limits:big return value is too large \(actual: 16(\.\d+)? MiB, limit: 16 MiB\)/,
    );
    await othersUnaffected();
  });
});
