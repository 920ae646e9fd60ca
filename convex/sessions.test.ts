import type { SessionId } from "convex-helpers/server/sessions";
import { afterEach, expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import {
  allRows,
  expectErrorCode,
  newSessionId,
  newTest,
  rejection,
  rowsOf,
  sha256Hex,
} from "./test.setup";

const HOUR_MS = 60 * 60 * 1000;

const DAY_MS = 24 * HOUR_MS;

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllEnvs();
});

/** A controlled clock starting at a fixed instant; returns that instant. */
function freezeClock(): number {
  vi.useFakeTimers({ toFake: ["Date"] });
  const start = new Date("2026-03-01T12:00:00Z").getTime();
  vi.setSystemTime(start);
  return start;
}

test("start creates one session and one user, and reuses them for the same secret", async () => {
  const t = newTest();
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
  const t = newTest();

  const profile = await t.mutation(api.sessions.start, {
    sessionId: newSessionId(),
  });

  expect(Object.keys(profile).sort()).toEqual(["_id", "isAnonymous", "name"]);
  expect(profile.isAnonymous).toBe(true);
  expect(profile.name).toMatch(/^User [1-9]\d{3}$/);
});

test("two secrets get two users", async () => {
  const t = newTest();

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
  const t = newTest();
  const args = { sessionId: sessionId as SessionId };

  await expectErrorCode(
    t.mutation(api.sessions.start, args),
    "INVALID_SESSION",
  );
  await expectErrorCode(t.query(api.users.me, args), "INVALID_SESSION");
  expect(Object.values(await allRows(t)).flat()).toEqual([]);
});

test("a mutation that fails leaves no session or user behind", async () => {
  const t = newTest();

  await expectErrorCode(
    t.mutation(api.messages.send, { sessionId: newSessionId(), body: " " }),
    "MESSAGE_EMPTY",
  );

  expect(Object.values(await allRows(t)).flat()).toEqual([]);
});

test("lastSeenAt is rewritten at most once an hour with the default 30 days", async () => {
  const start = freezeClock();
  const t = newTest();
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
  const t = newTest();
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
  const t = newTest();
  const sessionId = newSessionId();
  const tokenHash = await sha256Hex(sessionId);
  const paginationOpts = { numItems: 10, cursor: null };
  const wrongCase = { sessionId: sessionId.toUpperCase() as SessionId };
  const phone = newSessionId();
  const paired = newSessionId();
  const guestSecret = newSessionId();
  const signedIn = newSessionId();
  const signedOut = newSessionId();
  const forgotten = newSessionId();
  const afterForget = newSessionId();
  const otherCode = (code: string) =>
    code.startsWith("0") ? `1${code.slice(1)}` : `0${code.slice(1)}`;

  const outputs: unknown[] = [
    await t.query(api.users.me, { sessionId }),
    await t.query(api.messages.list, { paginationOpts }),
    await t.mutation(api.sessions.start, { sessionId }),
    await t.mutation(api.users.setName, { sessionId, name: "Ada" }),
    await t.mutation(api.messages.send, { sessionId, body: "hello" }),
    await t.query(api.users.me, { sessionId }),
    await t.query(api.messages.list, { paginationOpts }),
  ];
  const tokens = await t.mutation(api.presence.heartbeat, {
    sessionId,
    presenceId: crypto.randomUUID(),
    interval: 10_000,
  });
  outputs.push(
    tokens,
    await t.query(api.presence.list, { roomToken: tokens.roomToken }),
    await t.mutation(api.presence.disconnect, {
      sessionToken: tokens.sessionToken,
    }),
  );
  // A second device pairs, then the first one deletes everything.
  const created = await t.mutation(api.pairing.create, { sessionId });
  const { code } = created;
  outputs.push(
    created,
    await t.mutation(api.pairing.claim, {
      sessionId: phone,
      code: otherCode(code),
      newSessionId: paired,
    }),
    await t.mutation(api.pairing.claim, {
      sessionId: phone,
      code,
      newSessionId: paired,
    }),
    await t.query(api.users.me, { sessionId: paired }),
  );
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
    await rejection(t.mutation(api.pairing.create, wrongCase)),
    await rejection(
      t.mutation(api.pairing.claim, {
        ...wrongCase,
        code,
        newSessionId: newSessionId(),
      }),
    ),
    await rejection(
      t.mutation(api.pairing.claim, {
        sessionId: newSessionId(),
        code: (await t.mutation(api.pairing.create, { sessionId })).code,
        newSessionId: paired,
      }),
    ),
    await rejection(t.mutation(api.users.remove, wrongCase)),
    await rejection(
      t.mutation(api.presence.heartbeat, {
        ...wrongCase,
        presenceId: crypto.randomUUID(),
        interval: 10_000,
      }),
    ),
  ];
  // A refusal by the rate limits: the message after a burst.
  let limited: unknown = null;
  for (let i = 0; i < 10 && limited === null; i++) {
    limited = await t
      .mutation(api.messages.send, { sessionId, body: `burst ${i}` })
      .then(
        () => null,
        (error: unknown) => error,
      );
  }
  errors.push(limited);
  for (let done = false; !done;) {
    ({ done } = await t.mutation(api.users.remove, { sessionId: paired }));
    outputs.push({ done });
  }

  // Accounts: a ticket for sign-up, a sign-in that rotates, both sign-outs,
  // and profile pictures.
  const accountId = await t.run((ctx) =>
    ctx.db.insert("users", { name: "Member", isAnonymous: false }),
  );
  const authSessionId = await t.run((ctx) =>
    ctx.db.insert("authSessions", {
      userId: accountId,
      expirationTime: Date.now() + 60_000,
    }),
  );
  const asMember = t.withIdentity({
    subject: `${accountId}|${authSessionId}`,
  });
  outputs.push(
    await t.mutation(api.accounts.prepareUpgrade, { sessionId: guestSecret }),
    await asMember.mutation(api.accounts.afterSignIn, {
      sessionId: guestSecret,
      newSessionId: signedIn,
    }),
    await asMember.query(api.users.me, { sessionId: signedIn }),
    await asMember.mutation(api.accounts.signOutDevice, {
      sessionId: signedIn,
      newSessionId: signedOut,
    }),
    await asMember.mutation(api.accounts.afterSignIn, {
      sessionId: signedOut,
      newSessionId: forgotten,
    }),
    await asMember.mutation(api.avatars.generateUploadUrl, {
      sessionId: forgotten,
    }),
    await asMember.mutation(api.accounts.forgetDevice, {
      sessionId: forgotten,
      newSessionId: afterForget,
    }),
  );
  const notAPicture = await t.run((ctx) =>
    ctx.storage.store(new Blob(["plain text"], { type: "text/plain" })),
  );
  errors.push(
    await rejection(
      t.mutation(api.accounts.afterSignIn, {
        sessionId: newSessionId(),
        newSessionId: newSessionId(),
      }),
    ),
    await rejection(
      t.mutation(api.avatars.generateUploadUrl, { sessionId: afterForget }),
    ),
    await rejection(
      t.action(api.avatars.setAvatar, {
        sessionId: afterForget,
        storageId: notAPicture,
      }),
    ),
  );

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
    "INVALID_SESSION",
    "INVALID_SESSION",
    "INVALID_SESSION",
    "INVALID_SESSION",
    "INVALID_SESSION",
    "RATE_LIMITED",
    "NOT_SIGNED_IN",
    "AVATAR_MEMBERS_ONLY",
    "AVATAR_TYPE",
  ]);
  const secrets = [
    sessionId,
    phone,
    paired,
    guestSecret,
    signedIn,
    signedOut,
    forgotten,
    afterForget,
  ];
  const leaks = [
    ...secrets,
    ...(await Promise.all(secrets.map((secret) => sha256Hex(secret)))),
  ];
  expect(leaks).toContain(tokenHash);
  for (const text of texts) {
    for (const leak of leaks) expect(text.toLowerCase()).not.toContain(leak);
  }
});

test("a session unused for 30 days stops working, one used within 30 days keeps going", async () => {
  const start = freezeClock();
  const t = newTest();
  const active = newSessionId();
  const idle = newSessionId();
  const activeUser = await t.mutation(api.sessions.start, {
    sessionId: active,
  });
  const idleUser = await t.mutation(api.sessions.start, { sessionId: idle });

  vi.setSystemTime(start + 29 * DAY_MS);
  await t.mutation(api.messages.send, { sessionId: active, body: "day 29" });
  vi.setSystemTime(start + 30 * DAY_MS - 1);
  expect(await t.query(api.users.me, { sessionId: idle })).toEqual({
    ...idleUser,
    avatarUrl: null,
  });

  vi.setSystemTime(start + 30 * DAY_MS);
  expect(await t.query(api.users.me, { sessionId: idle })).toBeNull();
  await expectErrorCode(
    t.mutation(api.messages.send, { sessionId: idle, body: "too late" }),
    "SESSION_EXPIRED",
  );
  await expectErrorCode(
    t.mutation(api.sessions.start, { sessionId: idle }),
    "SESSION_EXPIRED",
  );
  expect(await t.query(api.users.me, { sessionId: active })).toEqual({
    ...activeUser,
    avatarUrl: null,
  });
  vi.setSystemTime(start + 58 * DAY_MS);
  await t.mutation(api.messages.send, { sessionId: active, body: "day 58" });
  expect(await rowsOf(t, "messages")).toHaveLength(2);
  expect(await rowsOf(t, "users")).toHaveLength(2);
});

test("SESSION_IDLE_DAYS sets the idle period and the lastSeenAt slice", async () => {
  vi.stubEnv("SESSION_IDLE_DAYS", "1");
  const start = freezeClock();
  const t = newTest();
  const sessionId = newSessionId();
  await t.mutation(api.sessions.start, { sessionId });
  const lastSeenAt = async () => (await rowsOf(t, "sessions"))[0].lastSeenAt;

  // One day / 720 slices = 2 minutes.
  vi.setSystemTime(start + 2 * 60 * 1000 - 1);
  await t.mutation(api.sessions.start, { sessionId });
  expect(await lastSeenAt()).toBe(start);
  vi.setSystemTime(start + 2 * 60 * 1000);
  await t.mutation(api.sessions.start, { sessionId });
  expect(await lastSeenAt()).toBe(start + 2 * 60 * 1000);

  vi.setSystemTime(start + 2 * 60 * 1000 + DAY_MS);
  await expectErrorCode(
    t.mutation(api.sessions.start, { sessionId }),
    "SESSION_EXPIRED",
  );
});

test.each(["", "zero", "0", "-3", "NaN", "Infinity"])(
  "SESSION_IDLE_DAYS=%j falls back to 30 days",
  async (value) => {
    vi.stubEnv("SESSION_IDLE_DAYS", value);
    const start = freezeClock();
    const t = newTest();
    const sessionId = newSessionId();
    await t.mutation(api.sessions.start, { sessionId });

    vi.setSystemTime(start + 30 * DAY_MS - 1);
    await t.mutation(api.sessions.start, { sessionId });
    vi.setSystemTime(start + 60 * DAY_MS - 1);
    await expectErrorCode(
      t.mutation(api.sessions.start, { sessionId }),
      "SESSION_EXPIRED",
    );
  },
);
