import { afterEach, expect, test, vi } from "vitest";
import { api, internal } from "./_generated/api";
import { CLEANUP_BATCH_SIZE, PAIRING_CODE_TTL_MS } from "./limits";
import { newSessionId, newTest, rowsOf } from "./test.setup";

const DAY_MS = 24 * 60 * 60 * 1000;

afterEach(() => {
  vi.useRealTimers();
});

function freezeClock(): number {
  vi.useFakeTimers({ toFake: ["Date"] });
  const start = new Date("2026-03-01T12:00:00Z").getTime();
  vi.setSystemTime(start);
  return start;
}

test("the sweep deletes expired sessions and the guests left with nothing", async () => {
  const start = freezeClock();
  const t = newTest();
  const silent = newSessionId();
  const writer = newSessionId();
  const active = newSessionId();
  const silentUser = await t.mutation(api.sessions.start, {
    sessionId: silent,
  });
  const writerUser = await t.mutation(api.sessions.start, {
    sessionId: writer,
  });
  await t.mutation(api.users.setName, { sessionId: writer, name: "Grace" });
  await t.mutation(api.messages.send, { sessionId: writer, body: "kept" });
  const activeUser = await t.mutation(api.sessions.start, {
    sessionId: active,
  });
  vi.setSystemTime(start + 20 * DAY_MS);
  await t.mutation(api.sessions.start, { sessionId: active });

  vi.setSystemTime(start + 30 * DAY_MS + 60_000);
  const result = await t.mutation(internal.cleanup.sweep, {});

  expect(result).toEqual({
    sessions: 2,
    users: 1,
    pairingCodes: 0,
    pairingFailures: 0,
    more: false,
  });
  const users = await rowsOf(t, "users");
  expect(users.map(({ _id }) => _id).sort()).toEqual(
    [writerUser._id, activeUser._id].sort(),
  );
  expect(users.some(({ _id }) => _id === silentUser._id)).toBe(false);
  const sessions = await rowsOf(t, "sessions");
  expect(sessions.map(({ userId }) => userId)).toEqual([activeUser._id]);
  // The writer's message stays, under the writer's last name.
  const { page } = await t.query(api.messages.list, {
    paginationOpts: { numItems: 10, cursor: null },
  });
  expect(page).toMatchObject([
    { body: "kept", author: { _id: writerUser._id, name: "Grace" } },
  ]);
});

test("a guest with a paired device still in use is not deleted when one session expires", async () => {
  const start = freezeClock();
  const t = newTest();
  const laptop = newSessionId();
  const me = await t.mutation(api.sessions.start, { sessionId: laptop });
  const { code } = await t.mutation(api.pairing.create, { sessionId: laptop });
  const phone = newSessionId();
  await t.mutation(api.pairing.claim, {
    sessionId: newSessionId(),
    code,
    newSessionId: phone,
  });
  vi.setSystemTime(start + 15 * DAY_MS);
  await t.mutation(api.sessions.start, { sessionId: phone });

  vi.setSystemTime(start + 31 * DAY_MS);
  await t.mutation(internal.cleanup.sweep, {});

  expect(await t.query(api.users.me, { sessionId: phone })).toMatchObject({
    _id: me._id,
  });
  expect(await t.query(api.users.me, { sessionId: laptop })).toBeNull();
  expect(await rowsOf(t, "sessions")).toHaveLength(1);
});

test("the sweep never deletes a member, even with no session and no message", async () => {
  const start = freezeClock();
  const t = newTest();
  const sessionId = newSessionId();
  const me = await t.mutation(api.sessions.start, { sessionId });
  await t.run((ctx) =>
    ctx.db.patch("users", me._id, {
      isAnonymous: false,
      tokenIdentifier: "https://example.test|member",
    }),
  );

  vi.setSystemTime(start + 31 * DAY_MS);
  await t.mutation(internal.cleanup.sweep, {});

  expect(await rowsOf(t, "sessions")).toEqual([]);
  expect((await rowsOf(t, "users")).map(({ _id }) => _id)).toEqual([me._id]);
});

test("the sweep deletes expired pairing codes and closed failure counters, and keeps live ones", async () => {
  const start = freezeClock();
  const t = newTest();
  const old = newSessionId();
  await t.mutation(api.pairing.create, { sessionId: old });
  const guesser = newSessionId();
  await t.mutation(api.pairing.claim, {
    sessionId: guesser,
    code: "0000-0000",
    newSessionId: newSessionId(),
  });
  expect(await rowsOf(t, "pairingFailures")).toHaveLength(2);

  vi.setSystemTime(start + PAIRING_CODE_TTL_MS + 1000);
  const fresh = newSessionId();
  await t.mutation(api.pairing.create, { sessionId: fresh });
  const result = await t.mutation(internal.cleanup.sweep, {});

  expect(result).toMatchObject({ pairingCodes: 1, pairingFailures: 2 });
  expect(await rowsOf(t, "pairingCodes")).toHaveLength(1);
  expect(await rowsOf(t, "pairingFailures")).toEqual([]);
  // Sessions are not expired yet, so nobody lost their identity.
  expect(await rowsOf(t, "sessions")).toHaveLength(3);
});

test("a backlog is swept in batches that schedule the next one", async () => {
  const start = freezeClock();
  const t = newTest();
  const count = CLEANUP_BATCH_SIZE * 2 + 7;
  await t.run(async (ctx) => {
    for (let i = 0; i < count; i++) {
      const userId = await ctx.db.insert("users", {
        name: `User ${1000 + i}`,
        isAnonymous: true,
      });
      await ctx.db.insert("sessions", {
        tokenHash: `hash-${i}`,
        userId,
        lastSeenAt: start,
      });
    }
  });

  vi.setSystemTime(start + 31 * DAY_MS);
  const first = await t.mutation(internal.cleanup.sweep, {});
  expect(first).toMatchObject({
    sessions: CLEANUP_BATCH_SIZE,
    users: CLEANUP_BATCH_SIZE,
    more: true,
  });
  expect(await rowsOf(t, "sessions")).toHaveLength(count - CLEANUP_BATCH_SIZE);

  vi.useFakeTimers();
  vi.setSystemTime(start + 31 * DAY_MS);
  await t.finishAllScheduledFunctions(vi.runAllTimers);

  expect(await rowsOf(t, "sessions")).toEqual([]);
  expect(await rowsOf(t, "users")).toEqual([]);
});

test("crons.ts runs the sweep every 10 minutes", async () => {
  const { default: crons } = await import("./crons");

  expect(crons.crons).toEqual({
    "sweep expired sessions and guests": expect.objectContaining({
      name: "cleanup:sweep",
      schedule: { type: "interval", minutes: 10 },
    }) as unknown,
  });
});
