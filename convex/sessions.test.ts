import type { SessionId } from "convex-helpers/server/sessions";
import { convexTest } from "convex-test";
import { afterEach, expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import schema from "./schema";
import {
  allRows,
  expectErrorCode,
  modules,
  newSessionId,
  rejection,
  rowsOf,
  sha256Hex,
} from "./test.setup";

const HOUR_MS = 60 * 60 * 1000;

afterEach(() => {
  vi.useRealTimers();
});

test("start creates one session and one user, and reuses them for the same secret", async () => {
  const t = convexTest(schema, modules);
  const sessionId = newSessionId();

  const first = await t.mutation(api.sessions.start, { sessionId });
  const second = await t.mutation(api.sessions.start, { sessionId });

  expect(second).toEqual(first);
  expect(await rowsOf(t, "users")).toHaveLength(1);
  const sessions = await rowsOf(t, "sessions");
  expect(sessions).toHaveLength(1);
  expect(sessions[0].userId).toBe(first._id);
});

test("a new visitor is an anonymous user named User NNNN", async () => {
  const t = convexTest(schema, modules);

  const profile = await t.mutation(api.sessions.start, {
    sessionId: newSessionId(),
  });

  expect(Object.keys(profile).sort()).toEqual(["_id", "isAnonymous", "name"]);
  expect(profile.isAnonymous).toBe(true);
  expect(profile.name).toMatch(/^User [1-9]\d{3}$/);
});

test("two secrets get two users", async () => {
  const t = convexTest(schema, modules);

  const alice = await t.mutation(api.sessions.start, {
    sessionId: newSessionId(),
  });
  const bob = await t.mutation(api.sessions.start, {
    sessionId: newSessionId(),
  });

  expect(alice._id).not.toBe(bob._id);
  expect(await rowsOf(t, "sessions")).toHaveLength(2);
});

const validSessionId = "0b7f6f3e-2f5c-4a8e-9d3b-6c1a2e4f5a6b";

test.each([
  { shape: "an empty", sessionId: "" },
  { shape: "a short", sessionId: "abc" },
  { shape: "an uppercase", sessionId: validSessionId.toUpperCase() },
  { shape: "a v1 UUID", sessionId: "6ba7b810-9dad-11d1-80b4-00c04fd430c8" },
  {
    shape: "a wrong-variant",
    sessionId: "0b7f6f3e-2f5c-4a8e-cd3b-6c1a2e4f5a6b",
  },
  { shape: "a 37-character", sessionId: `${validSessionId}0` },
  { shape: "a 35-character", sessionId: validSessionId.slice(1) },
  {
    shape: "a number-looking",
    sessionId: "123456789012345678901234567890123456",
  },
  { shape: "a braced", sessionId: `{${validSessionId}}` },
  { shape: "a padded", sessionId: ` ${validSessionId} ` },
])("$shape session id is refused", async ({ sessionId }) => {
  const t = convexTest(schema, modules);
  const args = { sessionId: sessionId as SessionId };

  await expectErrorCode(
    t.mutation(api.sessions.start, args),
    "INVALID_SESSION",
  );
  await expectErrorCode(t.query(api.users.me, args), "INVALID_SESSION");
  expect(await allRows(t)).toEqual({ users: [], sessions: [], messages: [] });
});

test("a mutation that fails leaves no session or user behind", async () => {
  const t = convexTest(schema, modules);

  await expectErrorCode(
    t.mutation(api.messages.send, { sessionId: newSessionId(), body: " " }),
    "MESSAGE_EMPTY",
  );

  expect(await allRows(t)).toEqual({ users: [], sessions: [], messages: [] });
});

test("lastSeenAt is rewritten at most once an hour", async () => {
  vi.useFakeTimers({ toFake: ["Date"] });
  const start = new Date("2026-03-01T12:00:00Z").getTime();
  vi.setSystemTime(start);
  const t = convexTest(schema, modules);
  const sessionId = newSessionId();
  const lastSeenAt = async () => {
    const [session] = await rowsOf(t, "sessions");
    return session.lastSeenAt;
  };

  await t.mutation(api.sessions.start, { sessionId });
  expect(await lastSeenAt()).toBe(start);

  vi.setSystemTime(start + HOUR_MS - 1);
  await t.mutation(api.messages.send, { sessionId, body: "still here" });
  expect(await lastSeenAt()).toBe(start);

  vi.setSystemTime(start + HOUR_MS);
  await t.mutation(api.messages.send, { sessionId, body: "an hour later" });
  expect(await lastSeenAt()).toBe(start + HOUR_MS);
});

test("the sessions table stores only the hash of the secret", async () => {
  const t = convexTest(schema, modules);
  const sessionId = newSessionId();

  await t.mutation(api.sessions.start, { sessionId });
  await t.mutation(api.users.setName, { sessionId, name: "Ada" });
  await t.mutation(api.messages.send, { sessionId, body: "hello" });

  const tables = await allRows(t);
  expect(Object.values(tables).flat()).toHaveLength(3);
  expect(JSON.stringify(tables).toLowerCase()).not.toContain(sessionId);
  const sessions = await rowsOf(t, "sessions");
  expect(sessions.map(({ tokenHash }) => tokenHash)).toEqual([
    await sha256Hex(sessionId),
  ]);
});

test("no public function returns or throws the secret or its hash", async () => {
  const t = convexTest(schema, modules);
  const sessionId = newSessionId();
  const tokenHash = await sha256Hex(sessionId);
  const paginationOpts = { numItems: 10, cursor: null };
  const wrongCase = { sessionId: sessionId.toUpperCase() as SessionId };

  const outputs: unknown[] = [
    await t.query(api.users.me, { sessionId }),
    await t.query(api.messages.list, { paginationOpts }),
    await t.mutation(api.sessions.start, { sessionId }),
    await t.mutation(api.users.setName, { sessionId, name: "Ada" }),
    await t.mutation(api.messages.send, { sessionId, body: "hello" }),
    await t.query(api.users.me, { sessionId }),
    await t.query(api.messages.list, { paginationOpts }),
  ];
  const errors = [
    await rejection(t.mutation(api.sessions.start, wrongCase)),
    await rejection(t.query(api.users.me, wrongCase)),
    await rejection(
      t.mutation(api.users.setName, { ...wrongCase, name: "Ada" }),
    ),
    await rejection(
      t.mutation(api.messages.send, { ...wrongCase, body: "hi" }),
    ),
    await rejection(t.mutation(api.users.setName, { sessionId, name: " " })),
    await rejection(
      t.mutation(api.users.setName, { sessionId, name: "x".repeat(41) }),
    ),
    await rejection(t.mutation(api.users.setName, { sessionId, name: "a\nb" })),
    await rejection(t.mutation(api.messages.send, { sessionId, body: "" })),
    await rejection(
      t.mutation(api.messages.send, { sessionId, body: "x".repeat(2001) }),
    ),
  ];

  const texts = [
    ...outputs.map((output) => JSON.stringify(output)),
    ...errors.flatMap((error) => {
      const { message, data } = error as { message: string; data: unknown };
      return [message, JSON.stringify(data)];
    }),
  ];
  expect(
    errors.map((error) => (error as { data: { code: string } }).data.code),
  ).toEqual([
    "INVALID_SESSION",
    "INVALID_SESSION",
    "INVALID_SESSION",
    "INVALID_SESSION",
    "NAME_EMPTY",
    "NAME_TOO_LONG",
    "NAME_INVALID_CHARACTERS",
    "MESSAGE_EMPTY",
    "MESSAGE_TOO_LONG",
  ]);
  for (const text of texts) {
    expect(text.toLowerCase()).not.toContain(sessionId);
    expect(text.toLowerCase()).not.toContain(tokenHash);
  }
});
