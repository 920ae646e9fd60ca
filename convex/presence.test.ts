import { afterEach, expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import { newSessionId, newTest, rejection } from "./test.setup";

afterEach(() => {
  vi.useRealTimers();
});

const INTERVAL_MS = 10_000;

/** A tab's own presence id, as `usePresence` makes one. */
function newPresenceId(): string {
  return crypto.randomUUID();
}

test("every tab that beats is listed under its user's name, once per user", async () => {
  const t = newTest();
  const alice = newSessionId();
  const bob = newSessionId();
  await t.mutation(api.users.setName, { sessionId: alice, name: "Alice" });
  await t.mutation(api.users.setName, { sessionId: bob, name: "Bob" });

  const { roomToken } = await t.mutation(api.presence.heartbeat, {
    sessionId: alice,
    presenceId: newPresenceId(),
    interval: INTERVAL_MS,
  });
  // Alice in a second tab, and Bob.
  await t.mutation(api.presence.heartbeat, {
    sessionId: alice,
    presenceId: newPresenceId(),
    interval: INTERVAL_MS,
  });
  const fromBob = await t.mutation(api.presence.heartbeat, {
    sessionId: bob,
    presenceId: newPresenceId(),
    interval: INTERVAL_MS,
  });

  // One room, one token: every page shares the same list subscription.
  expect(fromBob.roomToken).toBe(roomToken);
  const here = await t.query(api.presence.list, { roomToken });
  expect(here.map(({ name }) => name).sort()).toEqual(["Alice", "Bob"]);
});

test("a tab that says goodbye leaves the list", async () => {
  const t = newTest();
  const alice = newSessionId();
  const bob = newSessionId();
  const { roomToken } = await t.mutation(api.presence.heartbeat, {
    sessionId: alice,
    presenceId: newPresenceId(),
    interval: INTERVAL_MS,
  });
  const { sessionToken } = await t.mutation(api.presence.heartbeat, {
    sessionId: bob,
    presenceId: newPresenceId(),
    interval: INTERVAL_MS,
  });
  const bobUser = await t.query(api.users.me, { sessionId: bob });

  await t.mutation(api.presence.disconnect, { sessionToken });

  const here = await t.query(api.presence.list, { roomToken });
  expect(here.map(({ _id }) => _id)).not.toContain(bobUser!._id);
  expect(here).toHaveLength(1);
});

test("a tab that stops beating is dropped after its timeout", async () => {
  vi.useFakeTimers();
  const t = newTest();
  const alice = newSessionId();
  const { roomToken } = await t.mutation(api.presence.heartbeat, {
    sessionId: alice,
    presenceId: newPresenceId(),
    interval: INTERVAL_MS,
  });
  expect(await t.query(api.presence.list, { roomToken })).toHaveLength(1);

  vi.advanceTimersByTime(INTERVAL_MS * 3);
  await t.finishAllScheduledFunctions(vi.runAllTimers);

  expect(await t.query(api.presence.list, { roomToken })).toEqual([]);
});

test("the user in the room is the caller's, never one the client names", async () => {
  const t = newTest();
  const alice = newSessionId();

  const error = await rejection(
    t.mutation(api.presence.heartbeat, {
      sessionId: alice,
      presenceId: newPresenceId(),
      interval: INTERVAL_MS,
      userId: "someone else",
    } as never),
  );
  expect(String(error)).toMatch(/userId/);
  await expect(
    t.mutation(api.presence.heartbeat, {
      sessionId: alice,
      presenceId: "not a uuid",
      interval: INTERVAL_MS,
    }),
  ).rejects.toThrow(/presenceId/);
});

test("a deleted user drops out of the list", async () => {
  const t = newTest();
  const alice = newSessionId();
  const bob = newSessionId();
  const { roomToken } = await t.mutation(api.presence.heartbeat, {
    sessionId: alice,
    presenceId: newPresenceId(),
    interval: INTERVAL_MS,
  });
  await t.mutation(api.presence.heartbeat, {
    sessionId: bob,
    presenceId: newPresenceId(),
    interval: INTERVAL_MS,
  });

  await t.mutation(api.users.remove, { sessionId: bob });

  expect(await t.query(api.presence.list, { roomToken })).toHaveLength(1);
});
