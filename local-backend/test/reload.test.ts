/**
 * Hot reload on a writable copy of the fixture: edits reach connected clients
 * without dropping them, a broken edit keeps the last good build serving, and
 * schema changes rebuild indexes or are refused when the data violates them.
 */
import fs from "node:fs";
import path from "node:path";
import { makeFunctionReference } from "convex/server";
import { afterEach, beforeEach, expect, test } from "vitest";
import {
  api,
  copyFixture,
  removeDir,
  startTestBackend,
  tempDir,
  type TestBackend,
  waitFor,
} from "./helpers.ts";

let root: string;
let functions: string;
let h: TestBackend | undefined;

beforeEach(() => {
  root = tempDir("reload");
  functions = copyFixture(root);
});

afterEach(async () => {
  await h?.stop();
  h = undefined;
  removeDir(root);
});

function edit(file: string, change: (source: string) => string): void {
  const full = path.join(functions, file);
  fs.writeFileSync(full, change(fs.readFileSync(full, "utf8")));
}

function greetingSource(text: string): string {
  return `import { query } from "./lib/functions";

export default query({
  args: {},
  handler: () => ${JSON.stringify(text)},
});
`;
}

test("an edited function reaches a connected client's subscription without a reconnect", async () => {
  h = await startTestBackend({ functions, watch: true });
  const client = h.client();
  const seen: string[] = [];
  const errors: Error[] = [];
  client.onUpdate(
    api.greeting.default,
    {},
    (value) => seen.push(value),
    (error) => errors.push(error),
  );
  await waitFor(() => seen.length > 0, "the first result");
  expect(seen).toEqual(["hello from the default export"]);

  fs.writeFileSync(
    path.join(functions, "greeting.ts"),
    greetingSource("hello after the edit"),
  );

  await waitFor(
    () => seen.includes("hello after the edit"),
    "the watcher to reload and the subscription to update",
  );
  expect(errors).toEqual([]);
  expect(client.connectionState()).toMatchObject({
    isWebSocketConnected: true,
    connectionCount: 1,
  });
});

test("a broken edit keeps the last good build serving until it is fixed", async () => {
  h = await startTestBackend({ functions, watch: true });
  const client = h.client();
  const seen: string[] = [];
  const errors: Error[] = [];
  client.onUpdate(
    api.greeting.default,
    {},
    (value) => seen.push(value),
    (error) => errors.push(error),
  );
  await waitFor(() => seen.length > 0, "the first result");

  fs.writeFileSync(
    path.join(functions, "greeting.ts"),
    'import { query } from "./lib/functions";\nexport default query({ handler: () => "oops" ;\n',
  );
  await waitFor(
    () => h!.logs.errors.some((l) => l.includes("greeting.ts")),
    "the failed build to be reported",
  );

  expect(await h.httpClient().query(api.greeting.default, {})).toBe(
    "hello from the default export",
  );
  expect(
    await h.httpClient().mutation(api.messages.send, {
      author: "a",
      body: "writes still work",
    }),
  ).toEqual(expect.any(String));
  expect(errors).toEqual([]);

  fs.writeFileSync(
    path.join(functions, "greeting.ts"),
    greetingSource("hello after the fix"),
  );
  await waitFor(
    () => seen.includes("hello after the fix"),
    "the fixed build to reach the subscription",
  );
  expect(errors).toEqual([]);
});

test("reload() picks up a new module and reports success", async () => {
  h = await startTestBackend({ functions });
  const extra = makeFunctionReference<"query", Record<string, never>, string>(
    "extra:ping",
  );
  await expect(h.httpClient().query(extra, {})).rejects.toThrow(
    "Could not find public function for 'extra:ping'",
  );

  fs.writeFileSync(
    path.join(functions, "extra.ts"),
    'import { query } from "./lib/functions";\nexport const ping = query({ args: {}, handler: () => "pong" });\n',
  );

  expect(await h.backend.reload()).toBe(true);
  expect(await h.httpClient().query(extra, {})).toBe("pong");
});

test("a new index in the schema covers the documents written before it", async () => {
  h = await startTestBackend({ functions });
  const http = h.httpClient();
  for (const body of ["cherry", "apple", "banana"]) {
    await http.mutation(api.messages.send, { author: "fruit", body });
  }

  edit("schema.ts", (s) =>
    s.replace(
      '.index("by_author", ["author"])',
      '.index("by_author", ["author"])\n    .index("by_body", ["body"])',
    ),
  );
  fs.writeFileSync(
    path.join(functions, "bodies.ts"),
    `import { v } from "convex/values";
import { query } from "./lib/functions";

export const from = query({
  args: { first: v.string() },
  handler: async (ctx, { first }) =>
    (
      await ctx.db
        .query("messages")
        .withIndex("by_body", (q) => q.gte("body", first))
        .collect()
    ).map((m) => m.body),
});
`,
  );
  expect(await h.backend.reload()).toBe(true);

  const from = makeFunctionReference<"query", { first: string }, string[]>(
    "bodies:from",
  );
  expect(await http.query(from, { first: "b" })).toEqual(["banana", "cherry"]);
  await http.mutation(api.messages.send, {
    author: "fruit",
    body: "blueberry",
  });
  expect(await http.query(from, { first: "b" })).toEqual([
    "banana",
    "blueberry",
    "cherry",
  ]);
});

test("a schema that existing data violates is refused on reload and the data and old schema stay", async () => {
  h = await startTestBackend({ functions });
  const http = h.httpClient();
  await http.mutation(api.messages.send, { author: "ann", body: "text" });
  const before = await http.query(api.messages.list, {});

  edit("schema.ts", (s) => s.replace("body: v.string()", "body: v.number()"));

  expect(await h.backend.reload()).toBe(false);
  expect(h.logs.errors.join("\n")).toMatch(/schema/i);
  expect(await http.query(api.messages.list, {})).toEqual(before);
  // The old functions and schema still apply: a string body is still accepted.
  await http.mutation(api.messages.send, { author: "ann", body: "more text" });
  expect(await http.query(api.messages.list, {})).toHaveLength(2);
});
