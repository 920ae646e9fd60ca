import { convexTest } from "convex-test";
import { expect, test } from "vitest";
import { api } from "./_generated/api";
import { NAME_MAX_CHARS } from "./limits";
import schema from "./schema";
import { expectErrorCode, modules, newSessionId } from "./test.setup";

test("me is null before start and the profile after", async () => {
  const t = convexTest(schema, modules);
  const sessionId = newSessionId();

  expect(await t.query(api.users.me, { sessionId })).toBeNull();
  const profile = await t.mutation(api.sessions.start, { sessionId });

  expect(await t.query(api.users.me, { sessionId })).toEqual(profile);
});

test("setName stores the trimmed name", async () => {
  const t = convexTest(schema, modules);
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
    const t = convexTest(schema, modules);

    await expectErrorCode(
      t.mutation(api.users.setName, { sessionId: newSessionId(), name }),
      "NAME_EMPTY",
    );
  },
);

test("setName accepts 40 characters and refuses 41", async () => {
  const t = convexTest(schema, modules);
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
  const t = convexTest(schema, modules);
  const sessionId = newSessionId();

  await t.mutation(api.users.setName, { sessionId, name: emoji.repeat(40) });
  await expectErrorCode(
    t.mutation(api.users.setName, { sessionId, name: emoji.repeat(41) }),
    "NAME_TOO_LONG",
  );
});

test("setName refuses a short name padded with combining marks", async () => {
  const t = convexTest(schema, modules);

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
  const t = convexTest(schema, modules);

  await expectErrorCode(
    t.mutation(api.users.setName, {
      sessionId: newSessionId(),
      name: `Ada${character}Lovelace`,
    }),
    "NAME_INVALID_CHARACTERS",
  );
});

test("a refused rename keeps the old name", async () => {
  const t = convexTest(schema, modules);
  const sessionId = newSessionId();
  const { name } = await t.mutation(api.sessions.start, { sessionId });

  await expectErrorCode(
    t.mutation(api.users.setName, { sessionId, name: "" }),
    "NAME_EMPTY",
  );

  expect(await t.query(api.users.me, { sessionId })).toMatchObject({ name });
});
