import { ConvexError } from "convex/values";
import { afterEach, expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import {
  GUEST_CREATION_BURST,
  MESSAGE_BURST,
  MESSAGES_PER_HOUR,
  MESSAGES_PER_MINUTE,
  RENAME_BURST,
  RENAMES_PER_HOUR,
} from "./limits";
import { expectErrorCode, newSessionId, newTest, rowsOf } from "./test.setup";

const MINUTE_MS = 60 * 1000;
const HOUR_MS = 60 * MINUTE_MS;

afterEach(() => {
  vi.useRealTimers();
});

function freezeClock(): number {
  vi.useFakeTimers({ toFake: ["Date"] });
  const start = new Date("2026-03-01T12:00:00Z").getTime();
  vi.setSystemTime(start);
  return start;
}

/** Whether `call` succeeds; its error, when it fails. */
async function outcome(call: Promise<unknown>): Promise<unknown> {
  return await call.then(
    () => null,
    (error: unknown) => error ?? new Error("rejected with nothing"),
  );
}

/** The wait in `error`, checked to be a RATE_LIMITED for `action`. */
function waitOf(error: unknown, action: string): number {
  expect(error).toBeInstanceOf(ConvexError);
  const { data } = error as ConvexError<{ code: string; retryAfter: number }>;
  expect(data).toMatchObject({ code: "RATE_LIMITED", action });
  return data.retryAfter;
}

/** The refusal's wait, checked to be a RATE_LIMITED for `action`. */
async function refusedWait(
  call: Promise<unknown>,
  action: string,
): Promise<number> {
  const data = await expectErrorCode(call, "RATE_LIMITED");
  expect(data).toMatchObject({ action });
  return (data as { retryAfter: number }).retryAfter;
}

test("a burst of five messages goes through, the sixth waits about 3 seconds", async () => {
  const start = freezeClock();
  const t = newTest();
  const sessionId = newSessionId();
  const other = newSessionId();

  for (let i = 0; i < MESSAGE_BURST; i++) {
    await t.mutation(api.messages.send, { sessionId, body: `m${i}` });
  }
  const wait = await refusedWait(
    t.mutation(api.messages.send, { sessionId, body: "one too many" }),
    "send",
  );

  const perMessage = MINUTE_MS / MESSAGES_PER_MINUTE;
  expect(wait).toBeGreaterThan(0);
  expect(wait).toBeLessThanOrEqual(perMessage);
  expect((await rowsOf(t, "messages")).map(({ body }) => body)).not.toContain(
    "one too many",
  );
  // The limit is per user.
  await t.mutation(api.messages.send, { sessionId: other, body: "mine" });

  vi.setSystemTime(start + perMessage + 100);
  await t.mutation(api.messages.send, { sessionId, body: "after the wait" });
});

test("steady sending stops at the hourly limit even with burst tokens left", async () => {
  const start = freezeClock();
  const t = newTest();
  const sessionId = newSessionId();
  const burstRefill = MESSAGE_BURST * (MINUTE_MS / MESSAGES_PER_MINUTE);

  let sent = 0;
  let wait = 0;
  for (let round = 0; round < 200 && wait === 0; round++) {
    vi.setSystemTime(start + round * burstRefill);
    for (let i = 0; i < MESSAGE_BURST; i++) {
      const error = await outcome(
        t.mutation(api.messages.send, { sessionId, body: `m${sent}` }),
      );
      if (error !== null) {
        wait = waitOf(error, "send");
        break;
      }
      sent++;
    }
  }

  // Sending 5 every 15 s is 20 a minute; the hourly budget of 300 (refilling
  // at 5 a minute) runs out after about 400.
  expect(sent).toBeGreaterThan(MESSAGES_PER_HOUR);
  expect(sent).toBeLessThan(MESSAGES_PER_HOUR * 1.5);
  expect(wait).toBeGreaterThan(0);
  expect(wait).toBeLessThanOrEqual(HOUR_MS / MESSAGES_PER_HOUR);
});

test("five renames go through, the sixth waits about 6 minutes and keeps the old name", async () => {
  freezeClock();
  const t = newTest();
  const sessionId = newSessionId();

  for (let i = 0; i < RENAME_BURST; i++) {
    await t.mutation(api.users.setName, { sessionId, name: `Name ${i}` });
  }
  const wait = await refusedWait(
    t.mutation(api.users.setName, { sessionId, name: "Too many" }),
    "rename",
  );

  expect(wait).toBeGreaterThan(0);
  expect(wait).toBeLessThanOrEqual(HOUR_MS / RENAMES_PER_HOUR);
  expect(await t.query(api.users.me, { sessionId })).toMatchObject({
    name: `Name ${RENAME_BURST - 1}`,
  });
});

test("new guests are limited for the whole deployment; existing ones carry on", async () => {
  freezeClock();
  const t = newTest();
  const existing = newSessionId();
  await t.mutation(api.sessions.start, { sessionId: existing });

  let created = 1;
  let wait = 0;
  while (wait === 0 && created < GUEST_CREATION_BURST * 2) {
    const error = await outcome(
      t.mutation(api.sessions.start, { sessionId: newSessionId() }),
    );
    if (error !== null) {
      wait = waitOf(error, "createGuest");
    } else {
      created++;
    }
  }

  // Sharded buckets may refuse a little before the whole burst is spent.
  expect(created).toBeGreaterThan(GUEST_CREATION_BURST * 0.8);
  expect(created).toBeLessThanOrEqual(GUEST_CREATION_BURST);
  expect(wait).toBeGreaterThan(0);
  expect(await rowsOf(t, "users")).toHaveLength(created);
  expect(await rowsOf(t, "sessions")).toHaveLength(created);
  await t.mutation(api.messages.send, { sessionId: existing, body: "still" });
});
