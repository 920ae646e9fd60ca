/**
 * The backend driven by the real `convex/browser` clients: `ConvexClient` over
 * a `ws` WebSocket and `ConvexHttpClient` over fetch, against the fixture in
 * `test/fixture/convex`.
 */
import { createHash } from "node:crypto";
import { type FunctionArgs, makeFunctionReference } from "convex/server";
import {
  ConvexError,
  convexToJson,
  type GenericId,
  type Value,
} from "convex/values";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  api,
  postFunction,
  recordingClientLogger,
  rejection,
  startTestBackend,
  type TestBackend,
  waitFor,
  withTimeout,
} from "./helpers.ts";

type Message = {
  _id: GenericId<"messages">;
  _creationTime: number;
  author: string;
  body: string;
};
type Page = { page: Message[]; isDone: boolean; continueCursor: string };

let h: TestBackend;

beforeEach(async () => {
  h = await startTestBackend();
});

afterEach(async () => {
  await h.stop();
});

/** Subscribes and keeps the latest value (and every value) a subscription delivered. */
function watch<T>(
  subscribe: (
    onValue: (value: T) => void,
    onError: (error: Error) => void,
  ) => unknown,
): { values: T[]; errors: Error[]; latest(): T | undefined } {
  const values: T[] = [];
  const errors: Error[] = [];
  subscribe(
    (value) => values.push(value),
    (error) => errors.push(error),
  );
  return { values, errors, latest: () => values[values.length - 1] };
}

async function sendMany(count: number, prefix: string): Promise<void> {
  const http = h.httpClient();
  for (let i = 0; i < count; i++) {
    await http.mutation(api.messages.send, {
      author: "pager",
      body: `${prefix} ${i}`,
    });
  }
}

describe("subscriptions", () => {
  test("a second client's subscription updates after the first client's mutation", async () => {
    const writer = h.client();
    const reader = h.client();
    const list = watch<Message[]>((onValue, onError) =>
      reader.onUpdate(api.messages.list, {}, onValue, onError),
    );
    await waitFor(() => list.latest(), "the first result");
    expect(list.latest()).toEqual([]);

    const id = await writer.mutation(api.messages.send, {
      author: "ann",
      body: "hi bob",
    });

    const seen = await waitFor(
      () => list.latest()?.find((m) => m._id === id),
      "the reader to see the message",
    );
    expect(seen).toMatchObject({ author: "ann", body: "hi bob" });
    expect(list.errors).toEqual([]);
  });

  test("a mutation that writes nothing resolves, on a fresh backend and after writes", async () => {
    const client = h.client();
    expect(
      await withTimeout(
        client.mutation(api.counters.peek, { name: "none" }),
        "the first read-only mutation",
      ),
    ).toBeNull();
    await client.mutation(api.counters.increment, { name: "seen" });
    expect(
      await withTimeout(
        client.mutation(api.counters.peek, { name: "seen" }),
        "a read-only mutation after a write",
      ),
    ).toBe(1);
  });

  test("await mutation() resolves only once the write is in the caller's own subscriptions", async () => {
    const client = h.client();
    const list = watch<Message[]>((onValue, onError) =>
      client.onUpdate(api.messages.list, {}, onValue, onError),
    );
    const counter = watch<number | null>((onValue, onError) =>
      client.onUpdate(api.counters.get, { name: "ryw" }, onValue, onError),
    );
    await waitFor(
      () => list.latest() !== undefined && counter.values.length > 0,
      "the first results",
    );

    for (let i = 0; i < 20; i++) {
      const id = await client.mutation(api.messages.send, {
        author: "me",
        body: `message ${i}`,
      });
      expect(list.latest()?.[0]?._id).toBe(id);
      const value = await client.mutation(api.counters.increment, {
        name: "ryw",
      });
      expect(value).toBe(i + 1);
      expect(counter.latest()).toBe(i + 1);
    }
    expect(list.errors).toEqual([]);
    expect(counter.errors).toEqual([]);
  });

  test("concurrent read-modify-write mutations from two clients never lose an update", async () => {
    const a = h.client();
    const b = h.client();
    const calls = Array.from({ length: 20 }, (_, i) =>
      (i % 2 === 0 ? a : b).mutation(api.counters.increment, {
        name: "shared",
      }),
    );
    const results = await withTimeout(Promise.all(calls), "20 increments");

    expect([...results].sort((x, y) => x - y)).toEqual(
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    expect(
      await h.httpClient().query(api.counters.get, { name: "shared" }),
    ).toBe(20);
  });

  test("an unsubscribed query stops receiving updates while others keep theirs", async () => {
    const client = h.client();
    const byAnn = watch<Message[]>((onValue, onError) =>
      client.onUpdate(
        api.messages.byAuthor,
        { author: "ann" },
        onValue,
        onError,
      ),
    );
    let byBobCalls = 0;
    const unsubscribe = client.onUpdate(
      api.messages.byAuthor,
      { author: "bob" },
      () => byBobCalls++,
    );
    await waitFor(() => byAnn.latest() && byBobCalls > 0, "first results");
    unsubscribe();
    const callsAfterUnsubscribe = byBobCalls;

    await client.mutation(api.messages.send, { author: "bob", body: "1" });
    await client.mutation(api.messages.send, { author: "ann", body: "2" });

    await waitFor(() => byAnn.latest()?.length === 1, "ann's message");
    expect(byBobCalls).toBe(callsAfterUnsubscribe);
  });
});

describe("many subscriptions", () => {
  test("rapid subscribe and unsubscribe bursts leave the last subscriptions correct", async () => {
    const client = h.client();
    for (let i = 0; i < 30; i++) {
      const author = `churn ${i % 3}`;
      const unsubscribe = client.onUpdate(
        api.messages.byAuthor,
        { author },
        () => undefined,
      );
      if (i % 2 === 0) unsubscribe();
    }
    const final = watch<Message[]>((onValue, onError) =>
      client.onUpdate(
        api.messages.byAuthor,
        { author: "churn 1" },
        onValue,
        onError,
      ),
    );
    await waitFor(() => final.latest(), "the final subscription's result");

    const id = await client.mutation(api.messages.send, {
      author: "churn 1",
      body: "after the churn",
    });
    expect(final.latest()?.map((m) => m._id)).toEqual([id]);
    expect(final.errors).toEqual([]);
  });

  test("one write reaches every one of 20 subscribed clients", async () => {
    const lists = Array.from({ length: 20 }, () => {
      const client = h.client();
      return watch<Message[]>((onValue, onError) =>
        client.onUpdate(api.messages.list, { count: 5 }, onValue, onError),
      );
    });
    await waitFor(
      () => lists.every((l) => l.latest() !== undefined),
      "every client's first result",
    );

    const id = await h
      .httpClient()
      .mutation(api.messages.send, { author: "fan", body: "out" });

    await waitFor(
      () => lists.every((l) => l.latest()?.[0]?._id === id),
      "every client to see the write",
    );
    expect(lists.flatMap((l) => l.errors)).toEqual([]);
  });
});

describe("pagination", () => {
  test("paginated results stay gapless and unduplicated while rows are inserted", async () => {
    await sendMany(7, "old");
    const client = h.client();
    type Result = {
      results: Message[];
      status: string;
      loadMore(n: number): boolean;
    };
    const updates: Result[] = [];
    client.onPaginatedUpdate_experimental(
      api.messages.page,
      // The client adds paginationOpts to each page's arguments itself.
      {} as FunctionArgs<typeof api.messages.page>,
      { initialNumItems: 3 },
      (result) => updates.push(result as unknown as Result),
    );
    const latest = () => updates[updates.length - 1];
    await waitFor(() => latest()?.status === "CanLoadMore", "the first page");
    expect(latest().results.map((m) => m.body)).toEqual([
      "old 6",
      "old 5",
      "old 4",
    ]);

    expect(latest().loadMore(3)).toBe(true);
    await waitFor(
      () => latest().status === "CanLoadMore" && latest().results.length === 6,
      "the second page",
    );
    const loadedAt = updates.length - 1;

    await sendMany(2, "new");
    await waitFor(() => latest().results.length === 8, "two new rows on top");
    expect(latest().results.map((m) => m.body)).toEqual([
      "new 1",
      "new 0",
      "old 6",
      "old 5",
      "old 4",
      "old 3",
      "old 2",
      "old 1",
    ]);

    // Page 1 grows past twice its size: the client splits it at splitCursor.
    await sendMany(4, "newer");
    await waitFor(() => latest().results.length === 12, "four more rows");
    const expected = [
      "newer 3",
      "newer 2",
      "newer 1",
      "newer 0",
      "new 1",
      "new 0",
      "old 6",
      "old 5",
      "old 4",
      "old 3",
      "old 2",
      "old 1",
    ];
    expect(latest().results.map((m) => m.body)).toEqual(expected);
    for (const update of updates.slice(loadedAt)) {
      const bodies = update.results.map((m) => m.body);
      expect(new Set(bodies).size).toBe(bodies.length);
      // New rows only arrive on top, so every snapshot is a suffix of the last one.
      expect(bodies).toEqual(expected.slice(expected.length - bodies.length));
    }
  });

  test("a page keeps its end boundary (journal) while rows are inserted before it", async () => {
    await sendMany(7, "old");
    const client = h.client();
    const page1 = watch<Page>((onValue, onError) =>
      client.onUpdate(
        api.messages.page,
        { paginationOpts: { numItems: 3, cursor: null } },
        onValue,
        onError,
      ),
    );
    const first = await waitFor(() => page1.latest(), "page 1");
    const page2 = watch<Page>((onValue, onError) =>
      client.onUpdate(
        api.messages.page,
        { paginationOpts: { numItems: 3, cursor: first.continueCursor } },
        onValue,
        onError,
      ),
    );
    const second = await waitFor(() => page2.latest(), "page 2");
    expect(first.page.map((m) => m.body)).toEqual(["old 6", "old 5", "old 4"]);
    expect(second.page.map((m) => m.body)).toEqual(["old 3", "old 2", "old 1"]);

    await sendMany(2, "new");

    const grown = await waitFor(
      () => (page1.latest()!.page.length === 5 ? page1.latest() : undefined),
      "page 1 to grow",
    );
    expect(grown.page.map((m) => m.body)).toEqual([
      "new 1",
      "new 0",
      "old 6",
      "old 5",
      "old 4",
    ]);
    expect(grown.continueCursor).toBe(first.continueCursor);
    expect(page2.latest()).toEqual(second);
    const ids = [...grown.page, ...page2.latest()!.page].map((m) => m._id);
    expect(new Set(ids).size).toBe(ids.length);

    // Deleting the row on the boundary: page 1 shrinks, page 2 neither grows nor shrinks.
    const boundary = grown.page[grown.page.length - 1];
    expect(boundary.body).toBe("old 4");
    await h.httpClient().mutation(api.messages.remove, { id: boundary._id });
    const shrunk = await waitFor(
      () => (page1.latest()!.page.length === 4 ? page1.latest() : undefined),
      "page 1 to lose its last row",
    );
    expect(shrunk.page.map((m) => m.body)).toEqual([
      "new 1",
      "new 0",
      "old 6",
      "old 5",
    ]);
    await sendMany(1, "newest");
    await waitFor(
      () => page1.latest()!.page[0].body === "newest 0",
      "page 1 to grow again",
    );
    expect(page1.latest()!.page).toHaveLength(5);
    expect(page2.latest()).toEqual(second);
    expect(page1.errors).toEqual([]);
    expect(page2.errors).toEqual([]);
  });
});

describe("reconnection", () => {
  test("a connected client rides through a backend restart: subscriptions resume, pages keep their boundaries, queued mutations run once", async () => {
    await sendMany(5, "old");
    const client = h.client();
    const list = watch<Message[]>((onValue, onError) =>
      client.onUpdate(api.messages.list, {}, onValue, onError),
    );
    const page1 = watch<Page>((onValue, onError) =>
      client.onUpdate(
        api.messages.page,
        { paginationOpts: { numItems: 2, cursor: null } },
        onValue,
        onError,
      ),
    );
    const first = await waitFor(() => page1.latest(), "page 1");
    const page2 = watch<Page>((onValue, onError) =>
      client.onUpdate(
        api.messages.page,
        { paginationOpts: { numItems: 2, cursor: first.continueCursor } },
        onValue,
        onError,
      ),
    );
    const second = await waitFor(() => page2.latest(), "page 2");
    await waitFor(() => list.latest()?.length === 5, "the list");

    await h.closeBackend();
    const queued = client.mutation(api.messages.send, {
      author: "queued",
      body: "sent while the backend was down",
    });
    await h.restart({ samePort: true });

    const queuedId = await withTimeout(queued, "the queued mutation", 20_000);
    await sendMany(2, "new");
    await waitFor(
      () => list.latest()?.some((m) => m.body === "new 1"),
      "the list to resume after the restart",
      20_000,
    );
    const grown = await waitFor(
      () => (page1.latest()!.page.length === 5 ? page1.latest() : undefined),
      "page 1 to grow up to its old boundary",
    );
    expect(grown.page.map((m) => m.body)).toEqual([
      "new 1",
      "new 0",
      "sent while the backend was down",
      "old 4",
      "old 3",
    ]);
    expect(page2.latest()!.page).toEqual(second.page);
    expect(
      await h.httpClient().query(api.messages.byAuthor, { author: "queued" }),
    ).toEqual([expect.objectContaining({ _id: queuedId })]);
    expect(client.connectionState().connectionCount).toBeGreaterThanOrEqual(2);
    expect([...list.errors, ...page1.errors, ...page2.errors]).toEqual([]);
  });
});

describe("authentication", () => {
  test("a client whose token is refused is told so and keeps working unauthenticated", async () => {
    const client = h.client();
    const changes: boolean[] = [];
    client.setAuth(
      () => Promise.resolve("header.payload.signature"),
      (isAuthenticated) => changes.push(isAuthenticated),
    );
    const greeting = watch<string>((onValue, onError) =>
      client.onUpdate(api.greeting.default, {}, onValue, onError),
    );

    await waitFor(() => changes.length > 0, "the auth outcome");
    expect(changes).toEqual([false]);
    await waitFor(() => greeting.latest(), "a query result");
    expect(greeting.latest()).toBe("hello from the default export");
    expect(
      await client.mutation(api.messages.send, {
        author: "anon",
        body: "still works",
      }),
    ).toEqual(expect.any(String));
    expect(greeting.errors).toEqual([]);
  });
});

describe("cursors", () => {
  test("a cursor from another query, or no cursor at all, is refused with InvalidCursor", async () => {
    const http = h.httpClient();
    await sendMany(3, "m");
    await http.mutation(api.items.insert, { group: "g", rank: 1 });
    await http.mutation(api.items.insert, { group: "g", rank: 2 });
    const messagesPage = await http.query(api.messages.page, {
      paginationOpts: { numItems: 1, cursor: null },
    });
    expect(messagesPage.isDone).toBe(false);

    for (const cursor of [messagesPage.continueCursor, "not a cursor"]) {
      const error = await rejection(
        http.query(api.items.page, {
          group: "g",
          paginationOpts: { numItems: 1, cursor },
        }),
      );
      expect(error.message).toContain("InvalidCursor");
    }
  });
});

describe("errors", () => {
  test("ConvexError data (with a bigint) arrives intact over WebSocket", async () => {
    const client = h.client();

    const fromMutation = await rejection(
      client.mutation(api.messages.fail, {}),
    );
    expect(fromMutation).toBeInstanceOf(ConvexError);
    expect((fromMutation as ConvexError<Value>).data).toEqual({
      code: "NOPE",
      n: 1n,
    });

    const fromQuery = await rejection(client.query(api.messages.failQuery, {}));
    expect(fromQuery).toBeInstanceOf(ConvexError);
    expect((fromQuery as ConvexError<Value>).data).toEqual({
      code: "NOPE",
      n: 1n,
    });

    const fromAction = await rejection(
      client.action(api.actions.failInside, {}),
    );
    expect(fromAction).toBeInstanceOf(ConvexError);
    expect((fromAction as ConvexError<Value>).data).toEqual({
      code: "NOPE",
      n: 1n,
    });
  });

  test("a ConvexError from a nested runMutation reaches the calling mutation with its data", async () => {
    const result = await h.httpClient().mutation(api.items.nestedWrites, {
      group: "nested",
      data: { code: "NESTED", at: 3n },
    });
    expect(result).toEqual({
      caught: { code: "NESTED", at: 3n },
      seen: [1, 2],
    });
  });

  test("ConvexError data arrives over HTTP with status 560", async () => {
    const error = await rejection(
      h.httpClient().mutation(api.messages.fail, {}),
    );
    expect(error).toBeInstanceOf(ConvexError);
    expect((error as ConvexError<Value>).data).toEqual({
      code: "NOPE",
      n: 1n,
    });

    const { status, body } = await postFunction(
      h.url,
      "mutation",
      "messages:fail",
      {},
    );
    expect(status).toBe(560);
    expect(body.status).toBe("error");
    expect(typeof body.errorMessage).toBe("string");
    expect(body.errorData).toEqual(convexToJson({ code: "NOPE", n: 1n }));
  });

  test("a plain Error arrives as Error without errorData", async () => {
    const overWs = await rejection(h.client().mutation(api.messages.crash, {}));
    expect(overWs).not.toBeInstanceOf(ConvexError);
    expect(overWs.message).toContain("kaboom");

    const overHttp = await rejection(
      h.httpClient().mutation(api.messages.crash, {}),
    );
    expect(overHttp).not.toBeInstanceOf(ConvexError);
    expect(overHttp.message).toContain("kaboom");

    const { status, body } = await postFunction(
      h.url,
      "mutation",
      "messages:crash",
      {},
    );
    expect(status).toBe(560);
    expect(body.errorMessage).toContain("kaboom");
    expect(body).not.toHaveProperty("errorData");
    // The backend's own log shows where it happened, in the app's source.
    expect(h.logs.errors.join("\n")).toMatch(
      /messages:crash.*kaboom[\s\S]*convex\/messages\.ts:\d+:\d+/,
    );
  });

  test("argument validation errors name the path and arrive as plain Errors", async () => {
    const id = await h.httpClient().mutation(api.messages.send, {
      author: "a",
      body: "b",
    });
    const badArgs = {
      id,
      record: {},
      union: 1,
      literal: "exact" as const,
      int64: 1n,
      bytes: new ArrayBuffer(0),
      array: [{ name: "ok" }, { name: 2 as unknown as string }],
      object: { nested: { flag: true } },
    };

    const overWs = await rejection(h.client().query(api.kinds.echo, badArgs));
    expect(overWs).not.toBeInstanceOf(ConvexError);
    expect(overWs.message).toContain("ArgumentValidationError");
    expect(overWs.message).toContain(".array[1].name");

    const overHttp = await rejection(
      h.httpClient().query(api.kinds.echo, badArgs),
    );
    expect(overHttp).not.toBeInstanceOf(ConvexError);
    expect(overHttp.message).toContain("ArgumentValidationError");
    expect(overHttp.message).toContain(".array[1].name");

    const missing = await rejection(
      h.httpClient().mutation(api.messages.send, { author: "a" } as unknown as {
        author: string;
        body: string;
      }),
    );
    expect(missing.message).toContain("ArgumentValidationError");
    expect(missing.message).toContain("body");
  });

  test("an ID of another table is refused by v.id()", async () => {
    const http = h.httpClient();
    const messageId = await http.mutation(api.messages.send, {
      author: "a",
      body: "b",
    });
    const error = await rejection(
      http.mutation(api.items.patch, {
        id: messageId as unknown as GenericId<"items">,
        rank: 1,
      }),
    );
    expect(error.message).toContain("ArgumentValidationError");
    expect(error.message).toContain("messages");
  });

  test("every kind of validator accepts and returns its values unchanged", async () => {
    const id = await h.httpClient().mutation(api.messages.send, {
      author: "a",
      body: "b",
    });
    const args = {
      id,
      record: { a: 1, "b c": -2.5 },
      union: "text",
      literal: "exact" as const,
      optional: false,
      int64: 2n ** 62n,
      bytes: new Uint8Array([0, 1, 254, 255]).buffer,
      array: [{ name: "x" }, { name: "y" }],
      object: { nested: { flag: true } },
    };

    expect(await h.client().query(api.kinds.echo, args)).toEqual(args);
    const { optional: _omitted, ...withoutOptional } = args;
    expect(
      await h.httpClient().query(api.kinds.echo, {
        ...withoutOptional,
        union: 7,
      }),
    ).toEqual({ ...withoutOptional, union: 7 });
  });

  test("NaN, infinities and -0 survive the trip over WebSocket and HTTP", async () => {
    const values = [
      NaN,
      Infinity,
      -Infinity,
      -0,
      0,
      5e-324,
      1.7976931348623157e308,
    ];
    expect(await h.client().query(api.kinds.floats, { values })).toEqual(
      values,
    );
    const overHttp = await h.httpClient().query(api.kinds.floats, { values });
    expect(overHttp).toEqual(values);
    expect(Object.is(overHttp[3], -0)).toBe(true);
  });

  test("a return value that breaks the returns validator fails the call", async () => {
    const error = await rejection(
      h.httpClient().query(api.kinds.badReturn, {}),
    );
    expect(error).not.toBeInstanceOf(ConvexError);
    expect(error.message).toContain("ReturnsValidationError");
  });

  test("console output arrives as logLines, on HTTP, on the client and in the backend log", async () => {
    const { status, body } = await postFunction(
      h.url,
      "query",
      "messages:logs",
      {},
    );
    expect(status).toBe(200);
    expect(body.value).toBe("logged");
    expect(body.logLines).toEqual([
      "[LOG] 'hello' {\n  x: 1\n}",
      "[WARN] 'careful'",
    ]);

    const logger = recordingClientLogger();
    expect(await h.client({ logger }).query(api.messages.logs, {})).toBe(
      "logged",
    );
    await waitFor(
      () => logger.lines.some((l) => l.includes("careful")),
      "the client to print the log lines",
    );
    expect(logger.lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^\[CONVEX Q\(messages:logs\)\] \[LOG\] 'hello'/),
        expect.stringMatching(
          /^\[CONVEX Q\(messages:logs\)\] \[WARN\] 'careful'/,
        ),
      ]),
    );
    expect(h.logs.lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^\[CONVEX Q\(messages:logs\)\] \[LOG\] 'hello'/),
      ]),
    );
  });
});

describe("which functions can be called", () => {
  const NOT_FOUND = "Could not find public function for 'messages:secret'";

  test("internal functions are refused over WebSocket and HTTP", async () => {
    const secret = makeFunctionReference<
      "query",
      Record<string, never>,
      string
    >("messages:secret");
    const secretWrite = makeFunctionReference<
      "mutation",
      { body: string },
      string
    >("messages:secretWrite");
    const client = h.client();

    expect((await rejection(client.query(secret, {}))).message).toContain(
      NOT_FOUND,
    );
    expect(
      (await rejection(client.mutation(secretWrite, { body: "x" }))).message,
    ).toContain("Could not find public function for 'messages:secretWrite'");
    expect(
      (await rejection(h.httpClient().query(secret, {}))).message,
    ).toContain(NOT_FOUND);
    const { status, body } = await postFunction(
      h.url,
      "mutation",
      "messages:secretWrite",
      { body: "x" },
    );
    expect(status).toBe(560);
    expect(body.errorMessage).toContain(
      "Could not find public function for 'messages:secretWrite'",
    );
    expect(await h.httpClient().query(api.messages.list, {})).toEqual([]);
  });

  test("actions may call internal functions", async () => {
    expect(await h.client().action(api.actions.readSecret, {})).toBe(
      "the secret",
    );
  });

  test("a query called as a mutation, a mutation called as a query, and unknown functions are refused", async () => {
    const client = h.client();
    const listAsMutation = makeFunctionReference<"mutation">("messages:list");
    const sendAsQuery = makeFunctionReference<"query">("messages:send");

    const asMutation = await rejection(client.mutation(listAsMutation, {}));
    expect(asMutation.message).toContain("messages:list");
    const asQuery = await rejection(
      h.httpClient().query(sendAsQuery, { author: "a", body: "b" }),
    );
    expect(asQuery.message).toContain("messages:send");
    expect(await h.httpClient().query(api.messages.list, {})).toEqual([]);

    for (const name of ["messages:nope", "nope:list", "nope"]) {
      const canonical = name.includes(":") ? name : `${name}:default`;
      const error = await rejection(
        client.query(makeFunctionReference<"query">(name), {}),
      );
      expect(error.message).toContain(
        `Could not find public function for '${canonical}'`,
      );
    }
  });

  test("a query that writes fails and leaves no trace", async () => {
    const client = h.client();
    const write = await rejection(
      client.query(api.messages.writeFromQuery, {}),
    );
    expect(write).not.toBeInstanceOf(ConvexError);
    const mutate = await rejection(
      h.httpClient().query(api.messages.mutateFromQuery, {}),
    );
    expect(mutate).not.toBeInstanceOf(ConvexError);

    expect(await h.httpClient().query(api.messages.list, {})).toEqual([]);
  });

  test("default exports and modules in subfolders are reachable by every spelling", async () => {
    const client = h.client();
    const http = h.httpClient();

    expect(await client.query(api.greeting.default, {})).toBe(
      "hello from the default export",
    );
    for (const name of ["greeting", "greeting:default", "greeting.js"]) {
      expect(
        await http.query(
          makeFunctionReference<"query", Record<string, never>, string>(name),
          {},
        ),
      ).toBe("hello from the default export");
    }

    expect(await client.query(api.dir.nested.hello, { name: "ann" })).toBe(
      "hello ann from dir/nested",
    );
    expect(
      await http.query(
        makeFunctionReference<"query", { name: string }, string>(
          "dir/nested.js:hello",
        ),
        { name: "bob" },
      ),
    ).toBe("hello bob from dir/nested");

    // Mutations travel with the path as written: "dir/nested" for the default export.
    const id = await client.mutation(api.dir.nested.default, {
      body: "nested",
    });
    const viaHttp = await http.mutation(api.dir.nested.default, {
      body: "nested too",
    });
    const rows = await http.query(api.messages.byAuthor, {
      author: "dir/nested",
    });
    expect(rows.map((r) => r._id).sort()).toEqual([id, viaHttp].sort());
  });

  test("files the Convex CLI would not deploy are not loaded", async () => {
    const error = await rejection(
      h
        .httpClient()
        .query(makeFunctionReference<"query">("foo.config:loaded"), {}),
    );
    expect(error.message).toContain("Could not find public function");
    const log = h.logs.lines.join("\n");
    expect(log).not.toContain("foo.config.ts was loaded");
    expect(log).not.toContain("notes.ts was loaded");
  });
});

describe("the function runtime", () => {
  test("functions see CONVEX_CLOUD_URL", async () => {
    expect(await h.httpClient().query(api.runtime.cloudUrl, {})).toBe(h.url);
  });

  test("timers are refused in queries and allowed in actions", async () => {
    const error = await rejection(
      h.client().query(api.runtime.timerInQuery, {}),
    );
    expect(error.message).toContain("setTimeout");
    expect(await h.client().action(api.runtime.timerInAction, {})).toBe(
      "waited",
    );
  });

  test("crypto.subtle.digest gives the SHA digests of every kind of input, and Web Crypto's error otherwise", async () => {
    const text = "héllo, digest";
    const sha = (algorithm: string, data: string | Buffer = text) =>
      createHash(algorithm).update(data).digest("hex");
    expect(await h.client().query(api.runtime.digests, { text })).toEqual({
      sha1: sha("sha1"),
      sha256: sha("sha256"),
      sha384: sha("sha384"),
      sha512OfTail: sha("sha512", Buffer.from(text).subarray(1)),
      md5: "NotSupportedError",
    });
  });

  test("Date.now() is fixed for the whole run of a mutation", async () => {
    expect(await h.httpClient().mutation(api.runtime.frozenClock, {})).toEqual({
      elapsed: 0,
      sum: true,
    });
  });

  test(
    "a function that never settles times out and the backend keeps serving",
    { timeout: 45_000 },
    async () => {
      const http = h.httpClient();
      const hung = rejection(http.query(api.runtime.hang, {}), 30_000);
      const queued = http.mutation(api.messages.send, {
        author: "patient",
        body: "waited behind the hung query",
      });

      const error = await hung;
      expect(error.message).toMatch(/timed out/i);
      expect(await withTimeout(queued, "the queued mutation", 30_000)).toEqual(
        expect.any(String),
      );
      expect(await http.query(api.greeting.default, {})).toBe(
        "hello from the default export",
      );
    },
  );
});

describe("actions", () => {
  test("an action's runMutation and runQuery return values and the write is visible", async () => {
    const client = h.client();
    const list = watch<Message[]>((onValue, onError) =>
      client.onUpdate(
        api.messages.byAuthor,
        { author: "actor" },
        onValue,
        onError,
      ),
    );
    await waitFor(() => list.latest(), "the first result");

    const result = await client.action(api.actions.sendAndCount, {
      author: "actor",
      body: "from an action",
    });

    expect(result).toEqual({
      id: expect.any(String) as string,
      count: 1,
      sawOwnWrite: true,
    });
    const seen = await waitFor(
      () => list.latest()?.find((m) => m._id === result.id),
      "the subscription to show the action's write",
    );
    expect(seen.body).toBe("from an action");

    const again = await h.httpClient().action(api.actions.sendAndCount, {
      author: "actor",
      body: "over HTTP",
    });
    expect(again.count).toBe(2);
    expect(again.sawOwnWrite).toBe(true);
  });
});
