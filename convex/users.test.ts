import { expect, test } from "vitest";
import { api } from "./_generated/api";
import { DELETE_BATCH_SIZE, NAME_MAX_CHARS } from "./limits";
import { allRows, expectErrorCode, newSessionId, newTest } from "./test.setup";

test("me is null before start and the profile after", async () => {
  const t = newTest();
  const sessionId = newSessionId();

  expect(await t.query(api.users.me, { sessionId })).toBeNull();
  const profile = await t.mutation(api.sessions.start, { sessionId });

  expect(await t.query(api.users.me, { sessionId })).toEqual({
    ...profile,
    avatarUrl: null,
  });
});

test("setName stores the trimmed name", async () => {
  const t = newTest();
  const sessionId = newSessionId();

  const result = await t.mutation(api.users.setName, {
    sessionId,
    name: "  Ada Lovelace \n",
  });

  expect(result).toBeNull();
  expect(await t.query(api.users.me, { sessionId })).toMatchObject({
    name: "Ada Lovelace",
    isAnonymous: true,
  });
});

test.each(["", " ", "\t\n ", "\u00a0\u3000"])(
  "setName refuses the blank name %j",
  async (name) => {
    const t = newTest();

    await expectErrorCode(
      t.mutation(api.users.setName, { sessionId: newSessionId(), name }),
      "NAME_EMPTY",
    );
  },
);

test("setName accepts 40 characters and refuses 41", async () => {
  const t = newTest();
  const sessionId = newSessionId();

  await t.mutation(api.users.setName, { sessionId, name: "a".repeat(40) });
  const data = await expectErrorCode(
    t.mutation(api.users.setName, { sessionId, name: "b".repeat(41) }),
    "NAME_TOO_LONG",
  );

  expect(data).toMatchObject({ max: NAME_MAX_CHARS });
  expect(NAME_MAX_CHARS).toBe(40);
  expect(await t.query(api.users.me, { sessionId })).toMatchObject({
    name: "a".repeat(40),
  });
});

test.each([
  { emoji: "😀", kind: "a surrogate pair" },
  { emoji: "👍🏽", kind: "an emoji with a skin tone" },
  { emoji: "👨‍👩‍👧‍👦", kind: "a ZWJ family" },
  { emoji: "🏴󠁧󠁢󠁳󠁣󠁴󠁿", kind: "a tag flag" },
  { emoji: "e\u0301", kind: "a letter with a combining accent" },
])("setName counts $kind as one character", async ({ emoji }) => {
  const t = newTest();
  const sessionId = newSessionId();

  await t.mutation(api.users.setName, { sessionId, name: emoji.repeat(40) });
  await expectErrorCode(
    t.mutation(api.users.setName, { sessionId, name: emoji.repeat(41) }),
    "NAME_TOO_LONG",
  );
});

test("setName refuses a short name padded with combining marks", async () => {
  const t = newTest();

  await expectErrorCode(
    t.mutation(api.users.setName, {
      sessionId: newSessionId(),
      name: `a${"\u0301".repeat(1000)}`,
    }),
    "NAME_TOO_LONG",
  );
});

test.each([
  { character: "\n", label: "a line feed" },
  { character: "\t", label: "a tab" },
  { character: "\u0000", label: "NUL" },
  { character: "\u001b", label: "ESC" },
  { character: "\u007f", label: "DEL" },
  { character: "\u0085", label: "NEL" },
  { character: "\u2028", label: "a line separator" },
  { character: "\u2029", label: "a paragraph separator" },
  { character: "\u202e", label: "a right-to-left override" },
])("setName refuses $label inside a name", async ({ character }) => {
  const t = newTest();

  await expectErrorCode(
    t.mutation(api.users.setName, {
      sessionId: newSessionId(),
      name: `Ada${character}Lovelace`,
    }),
    "NAME_INVALID_CHARACTERS",
  );
});

test("a refused rename keeps the old name", async () => {
  const t = newTest();
  const sessionId = newSessionId();
  const { name } = await t.mutation(api.sessions.start, { sessionId });

  await expectErrorCode(
    t.mutation(api.users.setName, { sessionId, name: "" }),
    "NAME_EMPTY",
  );

  expect(await t.query(api.users.me, { sessionId })).toMatchObject({ name });
});

test("remove deletes the caller's messages, sessions and user, and nothing of anyone else", async () => {
  const t = newTest();
  const laptop = newSessionId();
  const me = await t.mutation(api.sessions.start, { sessionId: laptop });
  const count = DELETE_BATCH_SIZE * 2 + 5;
  await t.run(async (ctx) => {
    for (let i = 0; i < count; i++) {
      await ctx.db.insert("messages", { author: me._id, body: `mine ${i}` });
    }
  });
  const { code } = await t.mutation(api.pairing.create, { sessionId: laptop });
  const phone = newSessionId();
  await t.mutation(api.pairing.claim, {
    sessionId: newSessionId(),
    code,
    newSessionId: phone,
  });
  await t.mutation(api.pairing.create, { sessionId: laptop });
  const other = newSessionId();
  await t.mutation(api.messages.send, { sessionId: other, body: "not mine" });
  const before = await allRows(t);

  const steps: boolean[] = [];
  for (let i = 0; i < 10; i++) {
    const { done } = await t.mutation(api.users.remove, { sessionId: laptop });
    steps.push(done);
    if (done) break;
  }

  // Each step deletes one batch: three steps for 405 messages.
  expect(steps).toEqual([false, false, true]);
  const after = await allRows(t);
  expect(JSON.stringify(after)).not.toContain(me._id);
  expect(after.messages).toEqual(
    before.messages.filter(
      (message) => (message as { author: string }).author !== me._id,
    ),
  );
  expect(after.users).toHaveLength(1);
  expect(after.sessions).toHaveLength(1);
  expect(after.pairingCodes).toEqual([]);
  expect(await t.query(api.users.me, { sessionId: laptop })).toBeNull();
  expect(await t.query(api.users.me, { sessionId: phone })).toBeNull();
});

test("remove with a new secret only deletes the guest it just made", async () => {
  const t = newTest();

  expect(
    await t.mutation(api.users.remove, { sessionId: newSessionId() }),
  ).toEqual({ done: true });

  expect(Object.values(await allRows(t)).flat()).toEqual([]);
});

test("a step that stops early leaves the user able to continue", async () => {
  const t = newTest();
  const sessionId = newSessionId();
  const me = await t.mutation(api.sessions.start, { sessionId });
  await t.run(async (ctx) => {
    for (let i = 0; i < DELETE_BATCH_SIZE + 1; i++) {
      await ctx.db.insert("messages", { author: me._id, body: `m${i}` });
    }
  });

  expect(await t.mutation(api.users.remove, { sessionId })).toEqual({
    done: false,
  });

  expect(await t.query(api.users.me, { sessionId })).toEqual({
    ...me,
    avatarUrl: null,
  });
  const { page } = await t.query(api.messages.list, {
    paginationOpts: { numItems: 10, cursor: null },
  });
  expect(page.map(({ author }) => author._id)).toEqual([me._id]);
});
