/**
 * The chat in real Chromium against the real backend: one browser context per
 * person (own cookies and storage, so own identity), pages found by role and
 * label. One backend and one built page serve the whole file; every test makes
 * fresh contexts and tags its messages, so tests only see their own messages,
 * except the first, which needs the database still empty.
 */
import { createHash, randomUUID } from "node:crypto";
import type { JSHandle, Page } from "playwright-core";
import { ConvexHttpClient } from "convex/browser";
import type { SessionId } from "convex-helpers/server/sessions";
import { expect, test } from "vitest";
import { chatApi } from "./helpers/chatApi.ts";
import {
  connectionStatus,
  descriptionOf,
  documentId,
  messageBox,
  messageItem,
  messageList,
  nameField,
  openChat,
  readMessages,
  rename,
  sendMessage,
  shownName,
  SESSION_STORAGE_KEY,
  storedSecret,
  UI_TIMEOUT_MS,
  waitForMessage,
  waitUntilReady,
} from "./helpers/chat.ts";
import type { PageField, PageGlobals } from "./helpers/pageGlobals.ts";
import { browserSuite } from "./helpers/suite.ts";
import { SyncGate } from "./helpers/syncGate.ts";

const GUEST_NAME = /^User \d{4}$/;

const suite = browserSuite();
const { newPerson, openPerson } = suite;

/** A short random tag that keeps this test's messages apart from the others'. */
function newTag(): string {
  return randomUUID().slice(0, 8);
}

/** `expect.poll` with the time the page gets to react. */
function eventually<T>(read: () => Promise<T>) {
  return expect.poll(read, { timeout: UI_TIMEOUT_MS, interval: 25 });
}

/** The author names shown on the messages whose body is `body`. */
async function authorsOf(page: Page, body: string): Promise<string[]> {
  const shown = (await readMessages(page)).filter((m) => m.body === body);
  return shown.map((m) => m.author);
}

// Runs first: the only test that needs the database still empty.
test("a new visitor gets a guest name, a live connection and the empty chat", async () => {
  const page = await openPerson();

  expect(await shownName(page)).toMatch(GUEST_NAME);
  expect(await connectionStatus(page).textContent()).toBe("Connected");
  await page.getByText("No messages yet. Say hi!").waitFor();
  expect(await messageList(page).getByRole("listitem").count()).toBe(0);
  expect(await page.getByText("Loading messages…").count()).toBe(0);
});

test("two people see each other's messages live, marked (you) only for the sender", async () => {
  const tag = newTag();
  const alice = await openPerson();
  const bob = await openPerson();
  const aliceName = await shownName(alice);
  const bobName = await shownName(bob);
  const [aliceDoc, bobDoc] = [await documentId(alice), await documentId(bob)];

  const fromAlice = `Hi Bob, it's Alice (${tag})`;
  await sendMessage(alice, fromAlice);
  await waitForMessage(bob, fromAlice);
  const fromBob = `Hello Alice! (${tag})`;
  await sendMessage(bob, fromBob);
  await waitForMessage(alice, fromBob);

  const mineOnly = (mine: boolean) => ({ mine, markedYou: mine });
  const conversation = async (page: Page) =>
    (await readMessages(page)).filter((m) => m.body.includes(tag));
  expect(await conversation(alice)).toMatchObject([
    { body: fromAlice, author: aliceName, ...mineOnly(true) },
    { body: fromBob, author: bobName, ...mineOnly(false) },
  ]);
  expect(await conversation(bob)).toMatchObject([
    { body: fromAlice, author: aliceName, ...mineOnly(false) },
    { body: fromBob, author: bobName, ...mineOnly(true) },
  ]);
  expect(await documentId(alice)).toBe(aliceDoc);
  expect(await documentId(bob)).toBe(bobDoc);
});

test("a reload keeps the visitor's name and the chat history", async () => {
  const tag = newTag();
  const page = await openPerson();
  const name = await shownName(page);
  const body = `Still here after a reload (${tag})`;
  await sendMessage(page, body);

  await page.reload();
  await waitUntilReady(page);

  expect(await shownName(page)).toBe(name);
  await waitForMessage(page, body);
  expect(
    (await readMessages(page)).filter((m) => m.body === body),
  ).toMatchObject([{ author: name, mine: true, markedYou: true }]);
});

test("a rename shows at once for the renamer and live for others, on old messages too", async () => {
  const tag = newTag();
  const gate = new SyncGate();
  const alice = await openChat(await newPerson(), suite.stack().pageUrl, {
    errors: suite.errors(),
    beforeLoad: (page) => gate.attach(page),
  });
  const bob = await openPerson();
  const oldName = await shownName(alice);
  const bobDoc = await documentId(bob);
  const body = `Written before the rename (${tag})`;
  await sendMessage(alice, body);
  await waitForMessage(bob, body);
  expect(await authorsOf(bob, body)).toEqual([oldName]);

  // With the backend's answers to Alice held back, whatever changes on her
  // page comes from the optimistic update.
  const newName = `Alice ${tag}`;
  gate.hold();
  await rename(alice, newName);
  await eventually(() => authorsOf(alice, body)).toEqual([newName]);
  expect(await nameField(alice).inputValue()).toBe(newName);

  await eventually(() => authorsOf(bob, body)).toEqual([newName]);
  expect(await documentId(bob)).toBe(bobDoc);
  // The server has answered Alice too (the gate holds its frames), and she
  // still has not heard.
  await eventually(() => Promise.resolve(gate.heldFrames)).toBeGreaterThan(0);
  gate.release();

  await sendMessage(alice, `After the rename (${tag})`);
  expect(await authorsOf(alice, body)).toEqual([newName]);
  expect(await shownName(alice)).toBe(newName);
});

test("a sent message shows in the sender's list before the server answers", async () => {
  const tag = newTag();
  const gate = new SyncGate();
  const alice = await openChat(await newPerson(), suite.stack().pageUrl, {
    errors: suite.errors(),
    beforeLoad: (page) => gate.attach(page),
  });
  const bob = await openPerson();
  const name = await shownName(alice);

  // With the backend's answers to Alice held back, the message in her list
  // comes from the optimistic update, and her draft waits for the answer.
  gate.hold();
  const body = `Sent while the answer is held (${tag})`;
  const box = messageBox(alice);
  await box.fill(body);
  await box.press("Enter");
  await waitForMessage(alice, body);
  expect(await authorsOf(alice, body)).toEqual([name]);
  expect(await box.inputValue()).toBe(body);

  await waitForMessage(bob, body);
  await eventually(() => Promise.resolve(gate.heldFrames)).toBeGreaterThan(0);
  gate.release();
  await eventually(() => box.inputValue()).toBe("");
  // The stored message replaced the optimistic one: it is shown once.
  await eventually(() => messageItem(alice, body).count()).toBe(1);
});

test("a too-long message is refused in plain words, keeps its draft and is never stored", async () => {
  const tag = newTag();
  const alice = await openPerson();
  const bob = await openPerson();
  const tooLong = `${tag} ${"a".repeat(2000 - tag.length)}`;
  expect(tooLong).toHaveLength(2001);

  const box = messageBox(alice);
  await box.fill(tooLong);
  await box.press("Enter");

  const reason = alice.getByRole("alert");
  await reason.waitFor();
  expect(await reason.textContent()).toBe(
    "Messages can be at most 2,000 characters (this one has 2,001).",
  );
  expect(await descriptionOf(box)).toContain(await reason.textContent());
  expect(await box.getAttribute("aria-invalid")).toBe("true");
  expect(await box.inputValue()).toBe(tooLong);

  // Messages arrive in order, so once Bob has the next one, he would have had
  // the long one too.
  const next = `A shorter one (${tag})`;
  await sendMessage(alice, next);
  await waitForMessage(bob, next);
  for (const page of [alice, bob]) {
    const bodies = (await readMessages(page)).map((m) => m.body);
    expect(bodies.filter((b) => b.includes(tag))).toEqual([next]);
  }
  const stored = await new ConvexHttpClient(suite.stack().convexUrl).query(
    chatApi.messages.list,
    { paginationOpts: { numItems: 1000, cursor: null } },
  );
  expect(stored.page.filter((m) => m.body.includes(tag))).toHaveLength(1);
});

test("a too-long name is refused in plain words and others keep seeing the old name", async () => {
  const tag = newTag();
  const alice = await openPerson();
  const bob = await openPerson();
  const oldName = await shownName(alice);
  const first = `Before the long name (${tag})`;
  await sendMessage(alice, first);
  await waitForMessage(bob, first);

  const tooLong = `${tag} ${"n".repeat(40 - tag.length)}`;
  expect(tooLong).toHaveLength(41);
  await rename(alice, tooLong);

  const field = nameField(alice);
  const reason = alice.getByRole("alert");
  await reason.waitFor();
  expect(await reason.textContent()).toBe(
    "Names can be at most 40 characters.",
  );
  expect(await descriptionOf(field)).toEqual([await reason.textContent()]);
  expect(await field.inputValue()).toBe(tooLong);

  // Alice's calls reach the server in order: had the rename been sent, Bob
  // would see it by the time her next message arrives.
  const second = `After the long name (${tag})`;
  await sendMessage(alice, second);
  await waitForMessage(bob, second);
  for (const page of [alice, bob]) {
    expect(await authorsOf(page, first)).toEqual([oldName]);
    expect(await authorsOf(page, second)).toEqual([oldName]);
  }
});

test("?session=tab makes each tab its own visitor; by default tabs share one", async () => {
  const tag = newTag();

  const perTab = await newPerson();
  const tabOne = await openChat(perTab, suite.stack().pageUrl, {
    errors: suite.errors(),
    search: "?session=tab",
  });
  const tabTwo = await openChat(perTab, suite.stack().pageUrl, {
    errors: suite.errors(),
    search: "?session=tab",
  });
  expect(await storedSecret(tabOne, "session")).not.toBe(
    await storedSecret(tabTwo, "session"),
  );
  // Guest numbers are random and may collide, so tell the two apart by name.
  const tabOneName = `Tab one ${tag}`;
  await rename(tabOne, tabOneName);
  const fromTabOne = `From tab one (${tag})`;
  await sendMessage(tabOne, fromTabOne);
  await waitForMessage(tabTwo, fromTabOne);
  expect(await shownName(tabTwo)).toMatch(GUEST_NAME);
  expect(
    (await readMessages(tabTwo)).filter((m) => m.body === fromTabOne),
  ).toMatchObject([{ author: tabOneName, mine: false, markedYou: false }]);

  const shared = await newPerson();
  const first = await openChat(shared, suite.stack().pageUrl, {
    errors: suite.errors(),
  });
  const second = await openChat(shared, suite.stack().pageUrl, {
    errors: suite.errors(),
  });
  expect(await storedSecret(second, "local")).toBe(
    await storedSecret(first, "local"),
  );
  expect(await shownName(second)).toBe(await shownName(first));
  const fromFirst = `From the first tab (${tag})`;
  await sendMessage(first, fromFirst);
  await waitForMessage(second, fromFirst);
  expect(
    (await readMessages(second)).filter((m) => m.body === fromFirst),
  ).toMatchObject([{ mine: true, markedYou: true }]);
  const sharedName = `Both tabs ${tag}`;
  await rename(first, sharedName);
  await eventually(() => nameField(second).inputValue()).toBe(sharedName);
});

test("a duplicated ?session=tab tab makes itself a new identity", async () => {
  const tag = newTag();
  const context = await newPerson();
  const original = await openChat(context, suite.stack().pageUrl, {
    errors: suite.errors(),
    search: "?session=tab",
  });
  const originalName = `Original ${tag}`;
  await rename(original, originalName);
  // Sent after the rename, so the server has the new name once it shows.
  const body = `From the original tab (${tag})`;
  await sendMessage(original, body);
  const secret = await storedSecret(original, "session");

  // Chromium's "Duplicate tab" copies sessionStorage into the new tab.
  const copy = await openChat(context, suite.stack().pageUrl, {
    errors: suite.errors(),
    search: "?session=tab",
    beforeLoad: async (page) => {
      await page.addInitScript(
        ([key, value]) => {
          const { sessionStorage } = globalThis as unknown as PageGlobals;
          sessionStorage.setItem(key, value);
        },
        [SESSION_STORAGE_KEY, secret ?? ""] as const,
      );
    },
  });

  await eventually(() => storedSecret(copy, "session")).not.toBe(secret);
  await eventually(() => nameField(copy).inputValue()).toMatch(GUEST_NAME);
  await eventually(() => readMessages(copy)).toContainEqual(
    expect.objectContaining({
      body,
      author: originalName,
      mine: false,
      markedYou: false,
    }),
  );
  expect(await storedSecret(original, "session")).toBe(secret);
  expect(await shownName(original)).toBe(originalName);
});

test("older messages load on scrolling up or on Load older, each exactly once", async () => {
  const tag = newTag();
  const count = 45;
  const bodies = Array.from(
    { length: count },
    (_, i) => `Old message ${String(i + 1).padStart(2, "0")} (${tag})`,
  );
  // One writer per five messages: a burst of five is all one person may send.
  const author = new ConvexHttpClient(suite.stack().convexUrl);
  let sessionId = randomUUID() as SessionId;
  for (const [i, body] of bodies.entries()) {
    if (i % 5 === 0) sessionId = randomUUID() as SessionId;
    await author.mutation(chatApi.messages.send, { sessionId, body });
  }
  const [oldest, newest] = [bodies[0], bodies[count - 1]];

  // Scrolling near the top loads older messages by itself, and so would
  // Playwright scrolling the button into view before clicking it (the button
  // then moves or goes away under the pointer). On a screen tall enough for
  // the first page, only the click can load more.
  const clicker = await openChat(
    await newPerson({ viewport: { width: 1280, height: 4000 } }),
    suite.stack().pageUrl,
    { errors: suite.errors() },
  );
  const scroller = await openPerson();
  for (const page of [clicker, scroller]) {
    await waitForMessage(page, newest);
    expect(await messageItem(page, oldest).count()).toBe(0);
  }

  const loadOlder = clicker.getByRole("button", { name: "Load older" });
  // In view without scrolling: the whole first page fits.
  const button = await loadOlder.boundingBox();
  expect(button).not.toBeNull();
  expect(button!.y).toBeGreaterThanOrEqual(0);
  expect(button!.y + button!.height).toBeLessThanOrEqual(4000);
  await loadOlder.click();
  await waitForMessage(clicker, oldest);

  const items = messageList(scroller).getByRole("listitem");
  const lastBox = await items.last().boundingBox();
  expect(lastBox).not.toBeNull();
  await scroller.mouse.move(lastBox!.x + 10, lastBox!.y + 5);
  for (let wheel = 0; wheel < 10; wheel++) {
    if ((await messageItem(scroller, oldest).count()) > 0) break;
    const before = await items.count();
    await scroller.mouse.wheel(0, -100_000);
    await eventually(() => items.count()).toBeGreaterThan(before);
  }
  await waitForMessage(scroller, oldest);

  for (const page of [clicker, scroller]) {
    const shown = await readMessages(page);
    expect(new Set(shown.map((m) => m.id)).size).toBe(shown.length);
    expect(shown.filter((m) => m.body.includes(tag))).toEqual(
      bodies.map((body): unknown =>
        expect.objectContaining({ body, mine: false, markedYou: false }),
      ),
    );
  }
});

test("the session secret never appears in any page's markup", async () => {
  const tag = newTag();
  const alice = await openPerson();
  const bob = await openPerson();
  const tabbed = await openPerson("?session=tab");
  await rename(alice, `Alice ${tag}`);
  const body = `Nothing secret here (${tag})`;
  await sendMessage(alice, body);
  await waitForMessage(bob, body);
  await waitForMessage(tabbed, body);

  const secrets = [
    await storedSecret(alice, "local"),
    await storedSecret(bob, "local"),
    await storedSecret(tabbed, "session"),
  ];
  for (const secret of secrets) expect(secret).toMatch(/^[0-9a-f-]{36}$/);
  // The server stores only the secret's SHA-256; that must not leak either.
  const leaks = secrets.flatMap((secret) => [
    secret!,
    createHash("sha256").update(secret!).digest("hex"),
  ]);

  for (const page of [alice, bob, tabbed]) {
    // `page.content()` is the doctype plus `documentElement.outerHTML`;
    // field values live in properties, not in the markup.
    const fields = await page.getByRole("textbox").all();
    const markup = [
      await page.content(),
      ...(await Promise.all(fields.map((field) => field.inputValue()))),
    ].join("\n");
    expect(markup).toContain(body);
    for (const leak of leaks) expect(markup).not.toContain(leak);
  }
});

test("a pairing code moves a guest to a second browser: same name, (you) on old messages, own secret", async () => {
  const tag = newTag();
  const laptop = await openPerson();
  const bob = await openPerson();
  const name = `Traveller ${tag}`;
  await rename(laptop, name);
  const before = `Written on the laptop (${tag})`;
  await sendMessage(laptop, before);
  await waitForMessage(bob, before);

  await laptop.getByRole("button", { name: "Show a pairing code" }).click();
  const shown = laptop.getByRole("textbox", { name: "Your pairing code" });
  await shown.waitFor();
  const code = await shown.inputValue();
  expect(code).toMatch(/^[0-9A-Z]{4}-[0-9A-Z]{4}$/);

  const phone = await openPerson();
  const phoneFirstSecret = await storedSecret(phone, "local");
  expect(await shownName(phone)).toMatch(GUEST_NAME);
  await phone.getByRole("textbox", { name: "Pairing code" }).fill(code);
  await phone
    .getByRole("button", { name: "Continue here as that person" })
    .click();

  await eventually(() => nameField(phone).inputValue()).toBe(name);
  await eventually(async () =>
    (await readMessages(phone)).filter((m) => m.body === before),
  ).toMatchObject([{ author: name, mine: true, markedYou: true }]);
  const phoneSecret = await storedSecret(phone, "local");
  expect(phoneSecret).not.toBe(phoneFirstSecret);
  expect(phoneSecret).not.toBe(await storedSecret(laptop, "local"));

  // Both devices are the same person from now on, live.
  const fromPhone = `Written on the phone (${tag})`;
  await sendMessage(phone, fromPhone);
  await waitForMessage(laptop, fromPhone);
  expect(
    (await readMessages(laptop)).filter((m) => m.body === fromPhone),
  ).toMatchObject([{ author: name, mine: true, markedYou: true }]);
  expect(
    (await readMessages(bob)).filter((m) => m.body === fromPhone),
  ).toMatchObject([{ author: name, mine: false, markedYou: false }]);

  // The code worked once.
  const thief = await openPerson();
  await thief.getByRole("textbox", { name: "Pairing code" }).fill(code);
  await thief
    .getByRole("button", { name: "Continue here as that person" })
    .click();
  await thief.getByRole("alert").waitFor();
  expect(await thief.getByRole("alert").textContent()).toBe(
    "That code is wrong, used or expired. Show a new code on your other device and type it here.",
  );
  expect(await shownName(thief)).not.toBe(name);
});

test("delete everything asks first, then removes the visitor's messages for everyone and starts a new guest", async () => {
  const tag = newTag();
  const alice = await openPerson();
  const bob = await openPerson();
  const name = `Leaving ${tag}`;
  await rename(alice, name);
  const body = `Soon gone (${tag})`;
  await sendMessage(alice, body);
  const stays = `Bob stays (${tag})`;
  await sendMessage(bob, stays);
  await waitForMessage(alice, stays);
  await waitForMessage(bob, body);
  const secret = await storedSecret(alice, "local");

  await alice
    .getByRole("button", { name: "Delete everything I did here" })
    .click();
  const dialog = alice.getByRole("dialog", { name: "Delete everything?" });
  await dialog.waitFor();
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await dialog.waitFor({ state: "hidden" });
  expect(await messageItem(bob, body).count()).toBe(1);

  await alice
    .getByRole("button", { name: "Delete everything I did here" })
    .click();
  await dialog.getByRole("button", { name: "Delete everything" }).click();

  await eventually(() => messageItem(bob, body).count()).toBe(0);
  await eventually(() => messageItem(alice, body).count()).toBe(0);
  await eventually(() => nameField(alice).inputValue()).toMatch(GUEST_NAME);
  expect(await storedSecret(alice, "local")).not.toBe(secret);
  expect(await messageItem(alice, stays).count()).toBe(1);
  await dialog.waitFor({ state: "hidden" });
});

test("a refused burst says in words when to try again, and keeps the draft", async () => {
  // The Convex client logs every refused mutation to the console.
  suite.expectErrors([
    /\[CONVEX M\(messages:send\)\][\s\S]*"code":"RATE_LIMITED"/,
  ]);
  const tag = newTag();
  const alice = await openPerson();
  // A burst of five, then one every 3 s: sending as fast as the page allows
  // is refused within a few messages, however slow the machine.
  const box = messageBox(alice);
  const reason = alice.getByRole("alert");
  let sixth = "";
  for (let i = 1; i <= 20 && sixth === ""; i++) {
    const body = `Burst ${i} (${tag})`;
    await box.fill(body);
    await box.press("Enter");
    await alice.waitForFunction(
      (field) =>
        field?.value === "" || field?.getAttribute("aria-invalid") === "true",
      (await box.elementHandle()) as JSHandle<PageField | null>,
    );
    if ((await box.inputValue()) !== "") sixth = body;
  }
  expect(sixth).not.toBe("");

  await reason.waitFor();
  expect(await reason.textContent()).toMatch(
    /^You're sending messages faster than the chat allows\. Try again in [1-3] seconds?\.$/,
  );
  expect(await descriptionOf(box)).toContain(await reason.textContent());
  expect(await box.inputValue()).toBe(sixth);
  await eventually(() => messageItem(alice, sixth).count()).toBe(0);
});

test("who is here shows a second browser live and drops it when its tab closes", async () => {
  const tag = newTag();
  const alice = await openPerson();
  const bob = await openPerson();
  await rename(alice, `Alice ${tag}`);
  await rename(bob, `Bob ${tag}`);
  const here = (page: Page) =>
    page.getByRole("list", { name: /^Here now/ }).getByRole("listitem");
  const names = async (page: Page) =>
    (await here(page).allTextContents()).filter((n) => n.includes(tag));

  await eventually(() => names(alice)).toEqual(
    expect.arrayContaining([`Alice ${tag} (you)`, `Bob ${tag}`]) as unknown,
  );
  await eventually(() => names(bob)).toEqual(
    expect.arrayContaining([`Alice ${tag}`, `Bob ${tag} (you)`]) as unknown,
  );

  await bob.close({ runBeforeUnload: true });

  await eventually(() => names(alice)).toEqual([`Alice ${tag} (you)`]);
});
