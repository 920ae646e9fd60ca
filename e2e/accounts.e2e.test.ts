/**
 * Accounts in real Chromium on the local backend: a guest signs up and keeps
 * everything, a second browser signs in to the same account, a second guest's
 * messages join it on sign-in, both sign-outs return to a new guest with old
 * secrets and tokens refused, refusals in plain words, and a profile picture
 * uploaded in one browser shows in another. Every test signs up its own
 * e-mail address and tags its messages, so tests only see their own.
 */
import { createHash, randomUUID } from "node:crypto";
import type { Page } from "playwright-core";
import { ConvexHttpClient } from "convex/browser";
import type { SessionId } from "convex-helpers/server/sessions";
import { expect, test } from "vitest";
import {
  accountDialog,
  PASSWORD,
  signIn,
  signOut,
  signOutButton,
  signUp,
  signUpButton,
  storedAuth,
  submitAccountForm,
} from "./helpers/account.ts";
import { chatApi } from "./helpers/chatApi.ts";
import {
  messageItem,
  nameField,
  readMessages,
  rename,
  sendMessage,
  shownName,
  storedSecret,
  UI_TIMEOUT_MS,
  waitForMessage,
  waitUntilReady,
} from "./helpers/chat.ts";
import type { PageGlobals } from "./helpers/pageGlobals.ts";
import { browserSuite } from "./helpers/suite.ts";

const GUEST_NAME = /^User \d{4}$/;
const backendLog: string[] = [];
const suite = browserSuite({
  logger: {
    info: (line) => backendLog.push(line),
    error: (line) => {
      backendLog.push(line);
      console.error(`[backend] ${line}`);
    },
  },
});

/** A 1x1 PNG. */
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
  "base64",
);

function newTag(): string {
  return randomUUID().slice(0, 8);
}

function emailFor(tag: string, who = "ada"): string {
  return `${who}-${tag}@example.test`;
}

function eventually<T>(read: () => Promise<T>) {
  return expect.poll(read, { timeout: UI_TIMEOUT_MS, interval: 25 });
}

async function shown(page: Page, body: string) {
  return (await readMessages(page)).filter((m) => m.body === body);
}

function http(): ConvexHttpClient {
  return new ConvexHttpClient(suite.stack().convexUrl, { logger: false });
}

test("a guest signs up, reloads and still owns their history; a second browser signs in as the same person", async () => {
  const tag = newTag();
  const email = emailFor(tag);
  const laptop = await suite.openPerson();
  const name = `Ada ${tag}`;
  await rename(laptop, name);
  const before = `Written as a guest (${tag})`;
  await sendMessage(laptop, before);
  const guestSecret = await storedSecret(laptop, "local");

  await signUp(laptop, email);

  expect(await storedSecret(laptop, "local")).not.toBe(guestSecret);
  await laptop.reload();
  await waitUntilReady(laptop);
  await signOutButton(laptop).waitFor();
  expect(await shownName(laptop)).toBe(name);
  await eventually(() => shown(laptop, before)).toMatchObject([
    { author: name, mine: true, markedYou: true },
  ]);

  const phone = await suite.openPerson();
  expect(await shownName(phone)).toMatch(GUEST_NAME);
  await signIn(phone, email);
  await eventually(() => nameField(phone).inputValue()).toBe(name);
  await eventually(() => shown(phone, before)).toMatchObject([
    { author: name, mine: true, markedYou: true },
  ]);
  const fromPhone = `Written on the phone (${tag})`;
  await sendMessage(phone, fromPhone);
  await waitForMessage(laptop, fromPhone);
  expect(await shown(laptop, fromPhone)).toMatchObject([
    { author: name, mine: true, markedYou: true },
  ]);
  expect(await storedSecret(phone, "local")).not.toBe(
    await storedSecret(laptop, "local"),
  );
});

test("a second guest with messages signs in to the account, and those messages join it everywhere", async () => {
  const tag = newTag();
  const email = emailFor(tag);
  const ada = await suite.openPerson();
  const name = `Ada ${tag}`;
  await rename(ada, name);
  await signUp(ada, email);

  const guest = await suite.openPerson();
  const guestName = await shownName(guest);
  const written = `Written by a guest who signs in (${tag})`;
  await sendMessage(guest, written);
  await waitForMessage(ada, written);
  expect(await shown(ada, written)).toMatchObject([
    { author: guestName, mine: false, markedYou: false },
  ]);

  await signIn(guest, email);

  await eventually(() => nameField(guest).inputValue()).toBe(name);
  for (const page of [guest, ada]) {
    await eventually(() => shown(page, written)).toMatchObject([
      { author: name, mine: true, markedYou: true },
    ]);
  }
});

test("sign out returns to a new guest; the old secret, token and refresh token replayed at the server are refused", async () => {
  const tag = newTag();
  const email = emailFor(tag);
  const page = await suite.openPerson();
  const name = `Ada ${tag}`;
  await rename(page, name);
  const before = `Mine before signing out (${tag})`;
  await sendMessage(page, before);
  await signUp(page, email);
  const secret = (await storedSecret(page, "local")) as SessionId;
  const { jwt, refreshToken } = await storedAuth(page);
  expect(jwt).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  expect(refreshToken).not.toBeNull();
  const member = await http().query(chatApi.users.me, { sessionId: secret });
  expect(member).toMatchObject({ name, isAnonymous: false });

  await signOut(page, { forget: false });

  await eventually(() => nameField(page).inputValue()).toMatch(GUEST_NAME);
  expect(await storedSecret(page, "local")).not.toBe(secret);
  expect(await storedAuth(page)).toMatchObject({
    jwt: null,
    refreshToken: null,
  });
  await eventually(() => shown(page, before)).toMatchObject([
    { author: name, mine: false, markedYou: false },
  ]);

  // Replayed: the secret alone, the secret with the old token, the refresh token.
  const replay = http();
  expect(
    await replay.query(chatApi.users.me, { sessionId: secret }),
  ).toBeNull();
  replay.setAuth(jwt!);
  expect(
    await replay.query(chatApi.users.me, { sessionId: secret }),
  ).toBeNull();
  const sent = `Sent with the old secret and token (${tag})`;
  await replay.mutation(chatApi.messages.send, {
    sessionId: secret,
    body: sent,
  });
  await waitForMessage(page, sent);
  expect((await shown(page, sent))[0].author).not.toBe(name);
  expect(
    await http().action(chatApi.auth.signIn, { refreshToken: refreshToken! }),
  ).toEqual({ tokens: null });

  // A plain sign-out remembers the e-mail for next time.
  await signUpButton(page).click();
  const dialog = accountDialog(page, "Sign up to keep your name");
  await dialog.getByRole("button", { name: "Sign in instead" }).click();
  expect(
    await accountDialog(page, "Sign in").getByLabel("E-mail").inputValue(),
  ).toBe(email);
  await signIn(page, email);
  await eventually(() => nameField(page).inputValue()).toBe(name);
});

test("sign out and forget this device leaves nothing of the account in the browser or on the server", async () => {
  const tag = newTag();
  const email = emailFor(tag);
  const page = await suite.openPerson();
  await signUp(page, email);
  const secret = (await storedSecret(page, "local")) as SessionId;
  const { jwt, refreshToken } = await storedAuth(page);

  await signOut(page, { forget: true });

  await eventually(() => nameField(page).inputValue()).toMatch(GUEST_NAME);
  const { keys } = await storedAuth(page);
  expect(keys).toEqual(["chat-session-id"]);
  expect(await storedSecret(page, "local")).not.toBe(secret);
  const replay = http();
  replay.setAuth(jwt!);
  expect(
    await replay.query(chatApi.users.me, { sessionId: secret }),
  ).toBeNull();
  expect(
    await http().action(chatApi.auth.signIn, { refreshToken: refreshToken! }),
  ).toEqual({ tokens: null });
  await signUpButton(page).click();
  const dialog = accountDialog(page, "Sign up to keep your name");
  expect(await dialog.getByLabel("E-mail").inputValue()).toBe("");
});

test("wrong password, a taken e-mail and a weak password are refused in plain words, all from the keyboard", async () => {
  // The Convex client logs each refused call to the console.
  suite.expectErrors([/\[CONVEX A\(auth:signIn\)\]/]);
  const tag = newTag();
  const email = emailFor(tag);
  const owner = await suite.openPerson();
  await signUp(owner, email);

  const page = await suite.openPerson();
  const opener = signUpButton(page);
  await opener.focus();
  await page.keyboard.press("Enter");
  const dialog = accountDialog(page, "Sign up to keep your name");
  await dialog.waitFor();
  // The dialog moved focus into its first field.
  await eventually(() =>
    page.evaluate(() => {
      const { document } = globalThis as unknown as PageGlobals;
      return document.activeElement?.getAttribute("autocomplete") ?? null;
    }),
  ).toBe("email");
  await page.keyboard.type(emailFor(tag, "new"));
  await page.keyboard.press("Tab");
  await page.keyboard.type("short");
  await page.keyboard.press("Enter");
  const alert = dialog.getByRole("alert");
  await eventually(() => alert.textContent()).toBe(
    "Choose a longer password: at least 8 characters.",
  );

  await dialog.getByLabel("E-mail").fill(email);
  await dialog.getByLabel("Password").fill("another good password");
  await page.keyboard.press("Enter");
  await eventually(() => alert.textContent()).toBe(
    "There is already an account with this e-mail. Sign in instead.",
  );

  await submitAccountForm(page, "signIn", email, "not the password");
  const signInDialog = accountDialog(page, "Sign in");
  await eventually(() => signInDialog.getByRole("alert").textContent()).toBe(
    "Wrong e-mail or password.",
  );

  await page.keyboard.press("Escape");
  await signInDialog.waitFor({ state: "hidden" });
  // Focus goes back to the button that opened the dialog.
  expect(
    await page.evaluate(() => {
      const { document } = globalThis as unknown as PageGlobals;
      return document.activeElement?.textContent ?? null;
    }),
  ).toBe("Sign up to keep your name");
  expect(await shownName(page)).toMatch(GUEST_NAME);
  await signUpButton(page).waitFor();
  expect(await storedAuth(page)).toMatchObject({ jwt: null });
});

test("a profile picture uploaded in one browser shows beside the member's messages in another, live; a fake image is refused", async () => {
  suite.expectErrors([/\[CONVEX A\(avatars:setAvatar\)\]/]);
  const tag = newTag();
  const ada = await suite.openPerson();
  await signUp(ada, emailFor(tag));
  const body = `Look at my picture (${tag})`;
  await sendMessage(ada, body);
  const bob = await suite.openPerson();
  await waitForMessage(bob, body);
  const avatarOf = (page: Page, text: string) =>
    messageItem(page, text).locator("[data-avatar]");
  expect(await avatarOf(bob, body).getAttribute("data-avatar")).toBe(
    "generated",
  );

  const picker = ada.getByLabel(/profile picture/i);
  await picker.setInputFiles({
    name: "not-really.png",
    mimeType: "image/png",
    buffer: Buffer.from("<svg onload=alert(1)>"),
  });
  await eventually(() =>
    ada.locator(".avatar-upload").getByRole("alert").textContent(),
  ).toBe(
    "That file is not a picture the chat takes: choose a PNG, JPEG, WebP or GIF.",
  );

  await picker.setInputFiles({
    name: "me.png",
    mimeType: "image/png",
    buffer: PNG,
  });
  await eventually(() => avatarOf(bob, body).getAttribute("data-avatar")).toBe(
    "uploaded",
  );
  const src = await avatarOf(bob, body).getAttribute("src");
  const image = await fetch(src!);
  expect(image.headers.get("content-type")).toBe("image/png");
  expect(Buffer.from(await image.arrayBuffer())).toEqual(PNG);
  await eventually(() => avatarOf(ada, body).getAttribute("src")).toBe(src);
});

test("no secret, token or refresh token reaches another page, the markup or the backend's log", async () => {
  const tag = newTag();
  const watcher = await suite.newPerson();
  const bob = await watcher.newPage();
  const frames: string[] = [];
  bob.on("websocket", (socket) =>
    socket.on("framereceived", ({ payload }) => frames.push(String(payload))),
  );
  await bob.goto(suite.stack().pageUrl);
  await waitUntilReady(bob);

  const ada = await suite.openPerson();
  const secrets = [await storedSecret(ada, "local")];
  await signUp(ada, emailFor(tag));
  secrets.push(await storedSecret(ada, "local"));
  const tokens = await storedAuth(ada);
  const body = `Signed in and chatting (${tag})`;
  await sendMessage(ada, body);
  await waitForMessage(bob, body);
  await signOut(ada, { forget: false });
  secrets.push(await storedSecret(ada, "local"));
  await signIn(ada, emailFor(tag));
  secrets.push(await storedSecret(ada, "local"));
  const again = await storedAuth(ada);
  await signOut(ada, { forget: true });

  const leaks = [
    ...secrets.flatMap((secret) => [
      secret!,
      createHash("sha256").update(secret!).digest("hex"),
    ]),
    ...[tokens, again].flatMap(({ jwt, refreshToken }) => [
      jwt!,
      refreshToken!,
    ]),
    PASSWORD,
  ];
  for (const leak of leaks) expect(leak.length).toBeGreaterThan(16);
  const markup = [await bob.content(), await ada.content()].join("\n");
  expect(markup).toContain(body);
  expect(frames.join("\n")).toContain(body);
  expect(backendLog.length).toBeGreaterThan(0);
  for (const text of [markup, frames.join("\n"), backendLog.join("\n")]) {
    for (const leak of leaks) expect(text).not.toContain(leak);
  }
});
