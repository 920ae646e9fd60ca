import type { FunctionReturnType } from "convex/server";
import { expect, test } from "vitest";
import { api } from "./_generated/api";
import type { Id } from "./_generated/dataModel";
import { MESSAGE_MAX_CHARS } from "./limits";
import { expectErrorCode, newSessionId, newTest } from "./test.setup";

const firstPage = { numItems: 10, cursor: null };

test("send stores the trimmed body and list shows it with its author", async () => {
  const t = newTest();
  const sessionId = newSessionId();
  const me = await t.mutation(api.sessions.start, { sessionId });

  const id = await t.mutation(api.messages.send, {
    sessionId,
    body: "  hello\nworld  ",
  });

  const { page, isDone } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(isDone).toBe(true);
  expect(page).toHaveLength(1);
  const { _creationTime, ...message } = page[0];
  expect(typeof _creationTime).toBe("number");
  expect(message).toEqual({
    _id: id,
    body: "hello\nworld",
    author: { _id: me._id, name: me.name, avatarUrl: null },
  });
});

test.each(["", "   ", "\n\t"])(
  "send refuses the blank body %j",
  async (body) => {
    const t = newTest();

    await expectErrorCode(
      t.mutation(api.messages.send, { sessionId: newSessionId(), body }),
      "MESSAGE_EMPTY",
    );
  },
);

test("send accepts 2000 characters and refuses 2001", async () => {
  const t = newTest();
  const sessionId = newSessionId();

  await t.mutation(api.messages.send, { sessionId, body: "a".repeat(2000) });
  await t.mutation(api.messages.send, { sessionId, body: "👍🏽".repeat(2000) });
  const data = await expectErrorCode(
    t.mutation(api.messages.send, { sessionId, body: "b".repeat(2001) }),
    "MESSAGE_TOO_LONG",
  );

  expect(data).toMatchObject({ max: MESSAGE_MAX_CHARS });
  expect(MESSAGE_MAX_CHARS).toBe(2000);
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page.map(({ body }) => body.length)).toEqual([8000, 2000]);
});

test.each([
  ["40,000 one-character", "é".repeat(40_000)],
  ["a million-character", "x".repeat(1_000_000)],
])("send refuses a %s body with MESSAGE_TOO_LONG", async (_what, body) => {
  const t = newTest();
  const sessionId = newSessionId();
  await expectErrorCode(
    t.mutation(api.messages.send, { sessionId, body }),
    "MESSAGE_TOO_LONG",
  );
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page).toEqual([]);
});

test("list pages newest first without duplicates or gaps", async () => {
  const t = newTest();
  // Five writers, as one may send only a burst of five at once.
  const writers = Array.from({ length: 5 }, newSessionId);
  for (let i = 1; i <= 25; i++) {
    await t.mutation(api.messages.send, {
      sessionId: writers[i % writers.length],
      body: `message ${i}`,
    });
  }

  const pages: string[][] = [];
  let cursor: string | null = null;
  for (;;) {
    const result: FunctionReturnType<typeof api.messages.list> = await t.query(
      api.messages.list,
      { paginationOpts: { numItems: 10, cursor } },
    );
    pages.push(result.page.map(({ body }) => body));
    if (result.isDone) {
      break;
    }
    cursor = result.continueCursor;
  }

  expect(pages.map((page) => page.length)).toEqual([10, 10, 5]);
  expect(pages.flat()).toEqual(
    Array.from({ length: 25 }, (_, i) => `message ${25 - i}`),
  );
});

test("rename changes the author of old messages", async () => {
  const t = newTest();
  const sessionId = newSessionId();
  await t.mutation(api.messages.send, { sessionId, body: "before" });

  await t.mutation(api.users.setName, { sessionId, name: "Grace" });
  await t.mutation(api.messages.send, { sessionId, body: "after" });

  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page.map(({ body, author }) => [body, author.name])).toEqual([
    ["after", "Grace"],
    ["before", "Grace"],
  ]);
});

test("list is the same for every caller and names each message's author", async () => {
  const t = newTest();
  const alice = newSessionId();
  const bob = newSessionId();
  const aliceUser = await t.mutation(api.sessions.start, { sessionId: alice });
  const bobUser = await t.mutation(api.sessions.start, { sessionId: bob });
  await t.mutation(api.messages.send, { sessionId: alice, body: "a1" });
  await t.mutation(api.messages.send, { sessionId: bob, body: "b1" });
  await t.mutation(api.messages.send, { sessionId: alice, body: "a2" });

  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });

  expect(page.map(({ body, author }) => [body, author._id])).toEqual([
    ["a2", aliceUser._id],
    ["b1", bobUser._id],
    ["a1", aliceUser._id],
  ]);
  for (const message of page) {
    expect(Object.keys(message).sort()).toEqual([
      "_creationTime",
      "_id",
      "author",
      "body",
    ]);
  }
  // The arguments carry nothing about the caller, so there is no way to ask
  // for a per-viewer list.
  await expect(
    t.query(api.messages.list, {
      sessionId: alice,
      paginationOpts: firstPage,
    } as never),
  ).rejects.toThrow(/sessionId/);
});

test("list resolves every author on a page with several authors", async () => {
  const t = newTest();
  const names = new Map<Id<"users">, string>();
  for (const name of ["Ada", "Grace", "Edsger"]) {
    const sessionId = newSessionId();
    const { _id } = await t.mutation(api.sessions.start, { sessionId });
    await t.mutation(api.users.setName, { sessionId, name });
    names.set(_id, name);
    for (let n = 1; n <= 4; n++) {
      await t.mutation(api.messages.send, { sessionId, body: `${name} ${n}` });
    }
  }

  const { page } = await t.query(api.messages.list, {
    paginationOpts: { numItems: 12, cursor: null },
  });

  expect(page).toHaveLength(12);
  for (const { body, author } of page) {
    expect(body.startsWith(names.get(author._id) ?? "?")).toBe(true);
  }
});

test("list before any message is one finished, empty page", async () => {
  const t = newTest();

  const result = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });

  expect(result).toMatchObject({ page: [], isDone: true });
});
