import { expect, test } from "vitest";
import { api } from "./_generated/api";
import type { Id } from "./_generated/dataModel";
import { AVATAR_MAX_BYTES } from "./limits";
import { expectErrorCode, newSessionId, newTest } from "./test.setup";

const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
const JPEG = [0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46, 0, 1];
const firstPage = { numItems: 10, cursor: null };

/** A member with a session and a message, signed in as Convex Auth leaves it. */
async function memberWithMessage(t: ReturnType<typeof newTest>) {
  const userId = await t.run((ctx) =>
    ctx.db.insert("users", { name: "Grace", isAnonymous: false }),
  );
  const authSessionId = await t.run((ctx) =>
    ctx.db.insert("authSessions", {
      userId,
      expirationTime: Date.now() + 60_000,
    }),
  );
  const as = t.withIdentity({ subject: `${userId}|${authSessionId}` });
  const sessionId = newSessionId();
  await as.mutation(api.messages.send, { sessionId, body: "hello" });
  return { userId, as, sessionId };
}

async function upload(
  t: ReturnType<typeof newTest>,
  bytes: number[] | Uint8Array,
  type: string,
): Promise<Id<"_storage">> {
  return await t.run((ctx) =>
    ctx.storage.store(new Blob([new Uint8Array(bytes)], { type })),
  );
}

async function storedIds(t: ReturnType<typeof newTest>) {
  const files = await t.run((ctx) => ctx.db.system.query("_storage").take(100));
  return files.map(({ _id }) => _id);
}

test("a member's picture shows beside their messages and on their profile; a new one replaces and deletes the old", async () => {
  const t = newTest();
  const { userId, as, sessionId } = await memberWithMessage(t);
  expect(
    await as.mutation(api.avatars.generateUploadUrl, { sessionId }),
  ).toMatch(/^https?:\/\//);
  const first = await upload(t, PNG, "image/png");

  await as.action(api.avatars.setAvatar, { sessionId, storageId: first });

  const url = await t.run((ctx) => ctx.storage.getUrl(first));
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page[0].author).toEqual({
    _id: userId,
    name: "Grace",
    avatarUrl: url,
  });
  expect(await as.query(api.users.me, { sessionId })).toMatchObject({
    avatarUrl: url,
  });

  const second = await upload(t, JPEG, "image/jpeg");
  await as.action(api.avatars.setAvatar, { sessionId, storageId: second });
  expect(await storedIds(t)).toEqual([second]);
});

test.each([
  ["a text file", [0x68, 0x69], "text/plain"],
  ["an SVG (it can carry script)", [0x3c, 0x73, 0x76, 0x67], "image/svg+xml"],
  ["a PNG label on JPEG bytes", JPEG, "image/png"],
  ["no content type", PNG, ""],
])("%s is refused with AVATAR_TYPE and deleted", async (_, bytes, type) => {
  const t = newTest();
  const { userId, as, sessionId } = await memberWithMessage(t);
  const storageId = await upload(t, bytes, type);

  await expectErrorCode(
    as.action(api.avatars.setAvatar, { sessionId, storageId }),
    "AVATAR_TYPE",
  );

  expect(await storedIds(t)).toEqual([]);
  const user = await t.run((ctx) => ctx.db.get("users", userId));
  expect(user?.avatar).toBeUndefined();
});

test("a picture over 2 MiB is refused with AVATAR_TOO_LARGE and deleted; exactly 2 MiB is accepted", async () => {
  const t = newTest();
  const { as, sessionId } = await memberWithMessage(t);
  const big = new Uint8Array(AVATAR_MAX_BYTES + 1);
  big.set(PNG);
  const tooLarge = await upload(t, big, "image/png");

  const data = await expectErrorCode(
    as.action(api.avatars.setAvatar, { sessionId, storageId: tooLarge }),
    "AVATAR_TOO_LARGE",
  );
  expect(data).toMatchObject({ max: AVATAR_MAX_BYTES });
  expect(await storedIds(t)).toEqual([]);

  const fits = await upload(t, big.subarray(0, AVATAR_MAX_BYTES), "image/png");
  await as.action(api.avatars.setAvatar, { sessionId, storageId: fits });
  expect(await storedIds(t)).toEqual([fits]);
});

test("a guest cannot upload a picture and gets none", async () => {
  const t = newTest();
  const sessionId = newSessionId();
  await t.mutation(api.messages.send, { sessionId, body: "hi" });

  await expectErrorCode(
    t.mutation(api.avatars.generateUploadUrl, { sessionId }),
    "AVATAR_MEMBERS_ONLY",
  );
  const storageId = await upload(t, PNG, "image/png");
  await expectErrorCode(
    t.action(api.avatars.setAvatar, { sessionId, storageId }),
    "AVATAR_MEMBERS_ONLY",
  );
  expect(await storedIds(t)).toEqual([]);
  const { page } = await t.query(api.messages.list, {
    paginationOpts: firstPage,
  });
  expect(page[0].author.avatarUrl).toBeNull();
});

test("someone else's picture cannot be taken, and stays theirs", async () => {
  const t = newTest();
  const grace = await memberWithMessage(t);
  const other = await memberWithMessage(t);
  const storageId = await upload(t, PNG, "image/png");
  await grace.as.action(api.avatars.setAvatar, {
    sessionId: grace.sessionId,
    storageId,
  });

  await expectErrorCode(
    other.as.action(api.avatars.setAvatar, {
      sessionId: other.sessionId,
      storageId,
    }),
    "AVATAR_IN_USE",
  );
  expect(await storedIds(t)).toEqual([storageId]);
  const user = await t.run((ctx) => ctx.db.get("users", grace.userId));
  expect(user?.avatar).toBe(storageId);
});
