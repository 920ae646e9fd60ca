import { afterEach, expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import {
  PAIRING_CODE_TTL_MS,
  PAIRING_GLOBAL_WINDOW_MS,
  PAIRING_MAX_FAILURES_GLOBAL,
  PAIRING_MAX_FAILURES_PER_SESSION,
  PAIRING_SESSION_WINDOW_MS,
} from "./limits";
import {
  allRows,
  expectErrorCode,
  newSessionId,
  newTest,
  rowsOf,
  sha256Hex,
} from "./test.setup";

/**
 * convex-test keeps commit times increasing, so under a frozen clock each
 * commit moves the functions' `Date.now()` on by a millisecond; tests allow
 * this much drift.
 */
const DRIFT_MS = 1000;

afterEach(() => {
  vi.useRealTimers();
});

function freezeClock(): number {
  vi.useFakeTimers({ toFake: ["Date"] });
  const start = new Date("2026-03-01T12:00:00Z").getTime();
  vi.setSystemTime(start);
  return start;
}

/** A guest on a first device with a name and one message, and their code. */
async function guestWithCode(t: ReturnType<typeof newTest>) {
  const laptop = newSessionId();
  const me = await t.mutation(api.sessions.start, { sessionId: laptop });
  await t.mutation(api.users.setName, { sessionId: laptop, name: "Ada" });
  await t.mutation(api.messages.send, { sessionId: laptop, body: "hello" });
  const { code, expiresAt } = await t.mutation(api.pairing.create, {
    sessionId: laptop,
  });
  return { laptop, me, code, expiresAt };
}

/** Another code of the same shape that is not `code`. */
function otherCode(code: string): string {
  return code.startsWith("0") ? `1${code.slice(1)}` : `0${code.slice(1)}`;
}

test("a code moves a guest to a second device with its own secret", async () => {
  const t = newTest();
  const { laptop, me, code } = await guestWithCode(t);
  const phone = newSessionId();
  await t.mutation(api.sessions.start, { sessionId: phone });
  const paired = newSessionId();

  const result = await t.mutation(api.pairing.claim, {
    sessionId: phone,
    code,
    newSessionId: paired,
  });

  expect(result).toEqual({
    ok: true,
    profile: { _id: me._id, name: "Ada", isAnonymous: true },
  });
  expect(await t.query(api.users.me, { sessionId: paired })).toMatchObject({
    _id: me._id,
    name: "Ada",
  });
  expect(await t.query(api.users.me, { sessionId: laptop })).toMatchObject({
    _id: me._id,
  });
  // The phone's first secret and its empty guest are gone.
  expect(await t.query(api.users.me, { sessionId: phone })).toBeNull();
  expect((await rowsOf(t, "users")).map(({ _id }) => _id)).toEqual([me._id]);
  const sessions = await rowsOf(t, "sessions");
  expect(sessions.map(({ tokenHash }) => tokenHash).sort()).toEqual(
    [await sha256Hex(laptop), await sha256Hex(paired)].sort(),
  );
  expect(sessions.every(({ userId }) => userId === me._id)).toBe(true);
  await t.mutation(api.messages.send, {
    sessionId: paired,
    body: "from phone",
  });
  const { page } = await t.query(api.messages.list, {
    paginationOpts: { numItems: 10, cursor: null },
  });
  expect(page.map(({ author }) => author._id)).toEqual([me._id, me._id]);
});

test("a code looks like ABCD-EFGH, lasts 10 minutes and is stored only hashed", async () => {
  const start = freezeClock();
  const t = newTest();

  const { code, expiresAt } = await guestWithCode(t);

  expect(code).toMatch(/^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/);
  expect(expiresAt - PAIRING_CODE_TTL_MS).toBeGreaterThanOrEqual(start);
  expect(expiresAt - PAIRING_CODE_TTL_MS).toBeLessThan(start + DRIFT_MS);
  const everything = JSON.stringify(await allRows(t)).toUpperCase();
  expect(everything).not.toContain(code.replace("-", ""));
  expect(everything).not.toContain(code);
  const [stored] = await rowsOf(t, "pairingCodes");
  expect(stored.codeHash).toBe(
    await sha256Hex(`pairing:${code.replace("-", "")}`),
  );
});

test("a code works once", async () => {
  const t = newTest();
  const { code } = await guestWithCode(t);
  const claim = () =>
    t.mutation(api.pairing.claim, {
      sessionId: newSessionId(),
      code,
      newSessionId: newSessionId(),
    });

  expect(await claim()).toMatchObject({ ok: true });
  expect(await claim()).toEqual({ ok: false });
  expect(await rowsOf(t, "pairingCodes")).toEqual([]);
});

test.each([
  { when: "at its expiry", offset: 0, ok: false },
  { when: "a millisecond before", offset: -1, ok: true },
])("a code claimed $when works: $ok", async ({ offset, ok }) => {
  freezeClock();
  const t = newTest();
  const { code, expiresAt } = await guestWithCode(t);

  vi.setSystemTime(expiresAt + offset);
  const result = await t.mutation(api.pairing.claim, {
    sessionId: newSessionId(),
    code,
    newSessionId: newSessionId(),
  });

  expect(result.ok).toBe(ok);
});

test("a new code replaces the previous one", async () => {
  const t = newTest();
  const { laptop, code: first } = await guestWithCode(t);
  const { code: second } = await t.mutation(api.pairing.create, {
    sessionId: laptop,
  });
  const claim = (code: string) =>
    t.mutation(api.pairing.claim, {
      sessionId: newSessionId(),
      code,
      newSessionId: newSessionId(),
    });

  expect(await rowsOf(t, "pairingCodes")).toHaveLength(1);
  expect(await claim(first)).toEqual({ ok: false });
  expect(await claim(second)).toMatchObject({ ok: true });
});

test("a code is read leniently: lowercase, spaces, no dash, O for 0 and I or L for 1", async () => {
  const t = newTest();
  const { code } = await guestWithCode(t);
  const sloppy = ` ${code.slice(0, 4).toLowerCase()} ${code.slice(5)} `
    .replace(/0/g, "o")
    .replace(/1/g, "l");

  expect(
    await t.mutation(api.pairing.claim, {
      sessionId: newSessionId(),
      code: sloppy,
      newSessionId: newSessionId(),
    }),
  ).toMatchObject({ ok: true });
});

test("five wrong codes make a session wait ten minutes, even for the right code", async () => {
  const start = freezeClock();
  const t = newTest();
  const { laptop, code } = await guestWithCode(t);
  const phone = newSessionId();
  const claim = (attempt: string) =>
    t.mutation(api.pairing.claim, {
      sessionId: phone,
      code: attempt,
      newSessionId: newSessionId(),
    });

  for (let i = 0; i < PAIRING_MAX_FAILURES_PER_SESSION; i++) {
    expect(await claim(otherCode(code))).toEqual({ ok: false });
  }
  vi.setSystemTime(start + 60_000);
  const data = await expectErrorCode(claim(code), "PAIRING_RATE_LIMITED");
  const { retryAfter } = data as { retryAfter: number };
  // The window opened at the first wrong code, a minute ago.
  expect(retryAfter).toBeGreaterThanOrEqual(PAIRING_SESSION_WINDOW_MS - 60_000);
  expect(retryAfter).toBeLessThan(
    PAIRING_SESSION_WINDOW_MS - 60_000 + DRIFT_MS,
  );
  // Another device is not held back by this one's mistakes.
  expect(
    await t.mutation(api.pairing.claim, {
      sessionId: newSessionId(),
      code: otherCode(code),
      newSessionId: newSessionId(),
    }),
  ).toEqual({ ok: false });

  // The first code has expired by now; the laptop shows a new one.
  vi.setSystemTime(start + PAIRING_SESSION_WINDOW_MS + DRIFT_MS);
  const fresh = await t.mutation(api.pairing.create, { sessionId: laptop });
  expect(await claim(fresh.code)).toMatchObject({ ok: true });
});

test("a malformed code is refused without counting as a guess", async () => {
  const t = newTest();
  const { code } = await guestWithCode(t);
  const phone = newSessionId();

  for (const attempt of ["", "ABC", "ABCD-EFGHJ", "ABCD-EFG!", "U".repeat(8)]) {
    expect(
      await t.mutation(api.pairing.claim, {
        sessionId: phone,
        code: attempt,
        newSessionId: newSessionId(),
      }),
    ).toEqual({ ok: false });
  }

  expect(await rowsOf(t, "pairingFailures")).toEqual([]);
  expect(
    await t.mutation(api.pairing.claim, {
      sessionId: phone,
      code,
      newSessionId: newSessionId(),
    }),
  ).toMatchObject({ ok: true });
});

test("wrong codes from many sessions are limited for the whole deployment", async () => {
  const start = freezeClock();
  const t = newTest();
  const { code } = await guestWithCode(t);
  const claim = (attempt: string) =>
    t.mutation(api.pairing.claim, {
      sessionId: newSessionId(),
      code: attempt,
      newSessionId: newSessionId(),
    });

  for (let i = 0; i < PAIRING_MAX_FAILURES_GLOBAL; i++) {
    expect(await claim(otherCode(code))).toEqual({ ok: false });
  }
  const data = await expectErrorCode(claim(code), "PAIRING_RATE_LIMITED");
  const { retryAfter } = data as { retryAfter: number };
  expect(retryAfter).toBeLessThanOrEqual(PAIRING_GLOBAL_WINDOW_MS);
  expect(retryAfter).toBeGreaterThan(PAIRING_GLOBAL_WINDOW_MS - DRIFT_MS);

  vi.setSystemTime(start + PAIRING_GLOBAL_WINDOW_MS + DRIFT_MS);
  expect(await claim(code)).toMatchObject({ ok: true });
});

test("the claiming device's guest is kept when it has messages", async () => {
  const t = newTest();
  const { me, code } = await guestWithCode(t);
  const phone = newSessionId();
  const phoneUser = await t.mutation(api.sessions.start, { sessionId: phone });
  await t.mutation(api.messages.send, { sessionId: phone, body: "mine" });

  await t.mutation(api.pairing.claim, {
    sessionId: phone,
    code,
    newSessionId: newSessionId(),
  });

  const users = await rowsOf(t, "users");
  expect(users.map(({ _id }) => _id).sort()).toEqual(
    [me._id, phoneUser._id].sort(),
  );
  const { page } = await t.query(api.messages.list, {
    paginationOpts: { numItems: 10, cursor: null },
  });
  expect(page.find(({ body }) => body === "mine")?.author).toEqual({
    _id: phoneUser._id,
    name: phoneUser.name,
    avatarUrl: null,
  });
});

test("a claim refuses a new secret that is malformed or already in use", async () => {
  const t = newTest();
  const { laptop, code } = await guestWithCode(t);
  const phone = newSessionId();

  await expectErrorCode(
    t.mutation(api.pairing.claim, {
      sessionId: phone,
      code,
      newSessionId: laptop,
    }),
    "INVALID_SESSION",
  );
  await expectErrorCode(
    t.mutation(api.pairing.claim, {
      sessionId: phone,
      code,
      newSessionId: "not-a-uuid" as typeof phone,
    }),
    "INVALID_SESSION",
  );
  // Refused claims roll back, so the code still works.
  expect(
    await t.mutation(api.pairing.claim, {
      sessionId: phone,
      code,
      newSessionId: newSessionId(),
    }),
  ).toMatchObject({ ok: true });
});
