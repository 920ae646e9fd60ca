import { expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import type { Id } from "./_generated/dataModel";
import { createOrUpdateMember, MERGE_BATCH_SIZE } from "./model/accounts";
import {
  allRows,
  expectErrorCode,
  newSessionId,
  newTest,
  rowsOf,
  sha256Hex,
} from "./test.setup";

const firstPage = { numItems: 1000, cursor: null };

/** A member's account, as Convex Auth's sign-up would leave it. */
async function member(t: ReturnType<typeof newTest>, name: string) {
  const id = await t.run((ctx) =>
    ctx.db.insert("users", {
      name,
      isAnonymous: false,
      email: `${name.toLowerCase()}@example.test`,
    }),
  );
  return { id, ...(await signedIn(t, id)) };
}

/**
 * A browser signed in to `userId`, as Convex Auth's `signIn` leaves it: an
 * auth session with a refresh token, and a token whose subject is
 * "<userId>|<authSessionId>".
 */
async function signedIn(t: ReturnType<typeof newTest>, userId: Id<"users">) {
  const authSessionId = await t.run(async (ctx) => {
    const id = await ctx.db.insert("authSessions", {
      userId,
      expirationTime: Date.now() + 60_000,
    });
    await ctx.db.insert("authRefreshTokens", {
      sessionId: id,
      expirationTime: Date.now() + 60_000,
    });
    return id;
  });
  return {
    authSessionId,
    as: t.withIdentity({ subject: `${userId}|${authSessionId}` }),
  };
}

async function guestWithMessages(t: ReturnType<typeof newTest>, n: number) {
  const sessionId = newSessionId();
  const guest = await t.mutation(api.sessions.start, { sessionId });
  await t.run(async (ctx) => {
    for (let i = 0; i < n; i++) {
      await ctx.db.insert("messages", { author: guest._id, body: `g${i}` });
    }
  });
  return { sessionId, guest };
}

test("sign-up with an upgrade ticket turns the guest into the account: same id, name and messages", async () => {
  const t = newTest();
  const { sessionId, guest } = await guestWithMessages(t, 3);
  await t.mutation(api.users.setName, { sessionId, name: "Ada" });
  const { ticket } = await t.mutation(api.accounts.prepareUpgrade, {
    sessionId,
  });

  const userId = await t.run((ctx) =>
    createOrUpdateMember(ctx, {
      existingUserId: null,
      profile: { email: "ada@example.test", upgradeTicket: ticket },
    }),
  );

  expect(userId).toBe(guest._id);
  const [user] = await rowsOf(t, "users");
  expect(user).toMatchObject({
    _id: guest._id,
    name: "Ada",
    isAnonymous: false,
    email: "ada@example.test",
  });
  const { as } = await signedIn(t, userId);
  expect(await as.query(api.users.me, { sessionId: newSessionId() })).toEqual({
    _id: guest._id,
    name: "Ada",
    isAnonymous: false,
    avatarUrl: null,
  });
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page.every(({ author }) => author._id === guest._id)).toBe(true);
  // The ticket worked once and is gone; the guest's secret no longer works
  // on its own, so a paired device is not signed in by someone else's sign-up.
  expect(await rowsOf(t, "upgradeTickets")).toEqual([]);
  expect(await t.query(api.users.me, { sessionId })).toBeNull();
});

test("sign-up without a valid ticket makes a new member", async () => {
  const t = newTest();
  const { guest } = await guestWithMessages(t, 1);

  const userId = await t.run((ctx) =>
    createOrUpdateMember(ctx, {
      existingUserId: null,
      profile: { email: "new@example.test", upgradeTicket: "0".repeat(64) },
    }),
  );

  expect(userId).not.toBe(guest._id);
  expect(await rowsOf(t, "users")).toHaveLength(2);
});

test("sign-in to an existing account moves every guest message, in batches, and rotates the secret", async () => {
  vi.useFakeTimers();
  const t = newTest();
  const count = MERGE_BATCH_SIZE * 2 + 10;
  const { sessionId, guest } = await guestWithMessages(t, count);
  const account = await member(t, "Grace");
  const rotated = newSessionId();

  const profile = await account.as.mutation(api.accounts.afterSignIn, {
    sessionId,
    newSessionId: rotated,
  });

  expect(profile).toEqual({
    _id: account.id,
    name: "Grace",
    isAnonymous: false,
  });
  // Before the scheduler has moved the rest, every message already shows as
  // the account's, through the tombstone.
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page).toHaveLength(count);
  expect(page.every(({ author }) => author._id === account.id)).toBe(true);
  const tombstone = await t.run((ctx) => ctx.db.get("users", guest._id));
  expect(tombstone?.mergedInto).toBe(account.id);

  await t.finishAllScheduledFunctions(vi.runAllTimers);
  vi.useRealTimers();
  const messages = await rowsOf(t, "messages");
  expect(messages.every(({ author }) => author === account.id)).toBe(true);

  // The old secret is no one now; the rotated one is the account's.
  expect(await t.query(api.users.me, { sessionId })).toBeNull();
  expect(await t.query(api.users.me, { sessionId: rotated })).toMatchObject({
    _id: account.id,
  });
  const sessions = await rowsOf(t, "sessions");
  expect(sessions.map(({ tokenHash }) => tokenHash)).toEqual([
    await sha256Hex(rotated),
  ]);
});

test("a failing sign-in merge leaves both users as they were", async () => {
  const t = newTest();
  const { sessionId, guest } = await guestWithMessages(t, 5);
  const account = await member(t, "Grace");
  const bystander = newSessionId();
  await t.mutation(api.sessions.start, { sessionId: bystander });
  const before = await allRows(t);

  // The new secret is already someone's, so the merge's last step throws.
  await expectErrorCode(
    account.as.mutation(api.accounts.afterSignIn, {
      sessionId,
      newSessionId: bystander,
    }),
    "INVALID_SESSION",
  );

  expect(await allRows(t)).toEqual(before);
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page.every(({ author }) => author._id === guest._id)).toBe(true);
});

test("a guest with nothing to merge is simply dropped", async () => {
  const t = newTest();
  const sessionId = newSessionId();
  const guest = await t.mutation(api.sessions.start, { sessionId });
  const account = await member(t, "Grace");

  await account.as.mutation(api.accounts.afterSignIn, {
    sessionId,
    newSessionId: newSessionId(),
  });

  const users = await rowsOf(t, "users");
  expect(users.map(({ _id }) => _id)).toEqual([account.id]);
  expect(users.some(({ _id }) => _id === guest._id)).toBe(false);
});

test("an account on two browsers is one user with one name on both", async () => {
  const t = newTest();
  const account = await member(t, "Grace");
  const laptop = newSessionId();
  const phone = newSessionId();
  await account.as.mutation(api.accounts.afterSignIn, {
    sessionId: newSessionId(),
    newSessionId: laptop,
  });
  await account.as.mutation(api.accounts.afterSignIn, {
    sessionId: newSessionId(),
    newSessionId: phone,
  });

  await account.as.mutation(api.messages.send, {
    sessionId: laptop,
    body: "from the laptop",
  });
  await account.as.mutation(api.users.setName, {
    sessionId: phone,
    name: "Grace H.",
  });

  for (const sessionId of [laptop, phone]) {
    expect(await account.as.query(api.users.me, { sessionId })).toMatchObject({
      _id: account.id,
      name: "Grace H.",
    });
  }
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page).toMatchObject([
    { body: "from the laptop", author: { _id: account.id, name: "Grace H." } },
  ]);
});

test("sign-out ends this device's secret at once and starts a fresh guest; the account and its other devices stay", async () => {
  const t = newTest();
  const account = await member(t, "Grace");
  const laptop = newSessionId();
  const phone = newSessionId();
  for (const newSessionId of [laptop, phone]) {
    await account.as.mutation(api.accounts.afterSignIn, {
      sessionId: crypto.randomUUID() as typeof laptop,
      newSessionId,
    });
  }
  const fresh = newSessionId();

  const guest = await account.as.mutation(api.accounts.signOutDevice, {
    sessionId: laptop,
    newSessionId: fresh,
  });

  expect(guest.isAnonymous).toBe(true);
  expect(guest._id).not.toBe(account.id);
  // The old secret, replayed without a token, is no one.
  expect(await t.query(api.users.me, { sessionId: laptop })).toBeNull();
  expect(await t.query(api.users.me, { sessionId: fresh })).toEqual({
    ...guest,
    avatarUrl: null,
  });
  expect(await t.query(api.users.me, { sessionId: phone })).toMatchObject({
    _id: account.id,
  });
  expect(
    (await rowsOf(t, "users")).find(({ _id }) => _id === account.id),
  ).toMatchObject({ name: "Grace", isAnonymous: false });
});

test("afterSignIn without a token is refused", async () => {
  const t = newTest();

  await expectErrorCode(
    t.mutation(api.accounts.afterSignIn, {
      sessionId: newSessionId(),
      newSessionId: newSessionId(),
    }),
    "NOT_SIGNED_IN",
  );
  expect(await rowsOf(t, "users")).toEqual([]);
});

test("a token copied before sign-out cannot start a new session for the account", async () => {
  const t = newTest();
  const account = await member(t, "Grace");
  await t.run((ctx) => ctx.db.delete("authSessions", account.authSessionId));
  const attacker = newSessionId();

  await expectErrorCode(
    account.as.mutation(api.accounts.afterSignIn, {
      sessionId: newSessionId(),
      newSessionId: attacker,
    }),
    "NOT_SIGNED_IN",
  );
  expect(await t.query(api.users.me, { sessionId: attacker })).toBeNull();
  expect(await rowsOf(t, "sessions")).toEqual([]);
});

test("a merged guest cannot be merged again", async () => {
  const t = newTest();
  const { guest } = await guestWithMessages(t, 1);
  const first = await member(t, "Grace");
  const second = await member(t, "Edsger");
  await t.run((ctx) =>
    ctx.db.patch("users", guest._id, { mergedInto: first.id }),
  );
  const sessionId = newSessionId();
  await t.run(async (ctx) => {
    await ctx.db.insert("sessions", {
      tokenHash: await sha256Hex(sessionId),
      userId: guest._id,
      lastSeenAt: Date.now(),
    });
  });

  await expectErrorCode(
    second.as.mutation(api.accounts.afterSignIn, {
      sessionId,
      newSessionId: newSessionId(),
    }),
    "MERGE_NOT_A_GUEST",
  );
});

test("sign out and forget this device also ends the device's Convex Auth session and refresh tokens; the account's other devices stay", async () => {
  const t = newTest();
  const account = await member(t, "Grace");
  const phone = await signedIn(t, account.id);
  const laptop = newSessionId();
  const phoneSecret = newSessionId();
  await account.as.mutation(api.accounts.afterSignIn, {
    sessionId: newSessionId(),
    newSessionId: laptop,
  });
  await phone.as.mutation(api.accounts.afterSignIn, {
    sessionId: newSessionId(),
    newSessionId: phoneSecret,
  });
  const fresh = newSessionId();

  const guest = await account.as.mutation(api.accounts.forgetDevice, {
    sessionId: laptop,
    newSessionId: fresh,
  });

  expect(guest).toMatchObject({ isAnonymous: true });
  expect(guest._id).not.toBe(account.id);
  const authSessions = await rowsOf(t, "authSessions");
  expect(authSessions.map(({ _id }) => _id)).toEqual([phone.authSessionId]);
  const refreshTokens = await rowsOf(t, "authRefreshTokens");
  expect(refreshTokens.map(({ sessionId }) => sessionId)).toEqual([
    phone.authSessionId,
  ]);
  const sessions = await rowsOf(t, "sessions");
  expect(sessions.map(({ tokenHash }) => tokenHash).sort()).toEqual(
    [await sha256Hex(fresh), await sha256Hex(phoneSecret)].sort(),
  );
  // The forgotten device's token and secret are no one now, even together.
  expect(
    await account.as.query(api.users.me, { sessionId: laptop }),
  ).toBeNull();
  expect(await t.query(api.users.me, { sessionId: laptop })).toBeNull();
  expect(
    await phone.as.query(api.users.me, { sessionId: phoneSecret }),
  ).toMatchObject({ _id: account.id, name: "Grace" });
  expect(
    (await rowsOf(t, "users")).find(({ _id }) => _id === account.id),
  ).toMatchObject({ name: "Grace", isAnonymous: false });
});

test("plain sign-out leaves Convex Auth's sessions to its own signOut, and a token whose session ended is no one", async () => {
  const t = newTest();
  const account = await member(t, "Grace");
  const laptop = newSessionId();
  await account.as.mutation(api.accounts.afterSignIn, {
    sessionId: newSessionId(),
    newSessionId: laptop,
  });

  await account.as.mutation(api.accounts.signOutDevice, {
    sessionId: laptop,
    newSessionId: newSessionId(),
  });
  expect(await rowsOf(t, "authSessions")).toHaveLength(1);
  // What Convex Auth's `signOut` then does.
  await t.run((ctx) => ctx.db.delete("authSessions", account.authSessionId));

  // A copy of the token (still unexpired) with a secret the server never saw.
  const replayed = newSessionId();
  expect(
    await account.as.query(api.users.me, { sessionId: replayed }),
  ).toBeNull();
  const stranger = await account.as.mutation(api.sessions.start, {
    sessionId: replayed,
  });
  expect(stranger).toMatchObject({ isAnonymous: true });
  expect(stranger._id).not.toBe(account.id);
});

test("a renamed account's name shows on a merged guest's messages not moved yet", async () => {
  vi.useFakeTimers();
  const t = newTest();
  const { sessionId, guest } = await guestWithMessages(t, MERGE_BATCH_SIZE + 1);
  const account = await member(t, "Grace");
  const rotated = newSessionId();
  await account.as.mutation(api.accounts.afterSignIn, {
    sessionId,
    newSessionId: rotated,
  });
  await account.as.mutation(api.users.setName, {
    sessionId: rotated,
    name: "Grace H.",
  });

  const left = await rowsOf(t, "messages");
  expect(left.some(({ author }) => author === guest._id)).toBe(true);
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page).toHaveLength(MERGE_BATCH_SIZE + 1);
  for (const { author } of page) {
    expect(author).toEqual({
      _id: account.id,
      name: "Grace H.",
      avatarUrl: null,
    });
  }
  await t.finishAllScheduledFunctions(vi.runAllTimers);
  vi.useRealTimers();
});
