/**
 * The chat page as a person uses it, found by roles and labels: opening it,
 * the name field, the composer and the "Messages" list. Every wait here is on
 * a condition in the page, never on time.
 *
 * ```ts
 * const page = await openChat(context, stack.pageUrl, { errors });
 * await sendMessage(page, "hello");
 * await waitForMessage(other, "hello");
 * ```
 */
import type { BrowserContext, JSHandle, Locator, Page } from "playwright-core";
import type { PageErrorLog } from "./browser.ts";
import type { PageElement, PageField, PageGlobals } from "./pageGlobals.ts";

/** How long the page gets to show something before a wait fails. */
export const UI_TIMEOUT_MS = 10_000;

export const SESSION_STORAGE_KEY = "chat-session-id";

/** One list item, as a reader of the page sees it. */
export type ShownMessage = {
  id: string;
  author: string;
  body: string;
  /** Has the `message--mine` class (styled as one's own). */
  mine: boolean;
  /** Contains the visually hidden " (you)" that screen readers announce. */
  markedYou: boolean;
};

export type OpenChatOptions = {
  /** Appended to the page URL, e.g. "?session=tab". */
  search?: string;
  errors?: PageErrorLog;
  /** Runs before the page loads, e.g. to route its WebSocket. */
  beforeLoad?: (page: Page) => Promise<void>;
};

/** Opens the chat in a new tab of `context` and waits until it is usable. */
export async function openChat(
  context: BrowserContext,
  pageUrl: string,
  options: OpenChatOptions = {},
): Promise<Page> {
  const page = await context.newPage();
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  options.errors?.watch(page);
  await options.beforeLoad?.(page);
  await page.goto(new URL(options.search ?? "", pageUrl).href);
  await waitUntilReady(page);
  return page;
}

/** Connected, with a profile in the name field and the first page listed. */
export async function waitUntilReady(page: Page): Promise<void> {
  await connectionStatus(page)
    .filter({ hasText: /^Connected$/ })
    .waitFor();
  // An empty list has no box, so it is never "visible".
  await messageList(page)
    .and(page.locator(":not([aria-busy])"))
    .waitFor({ state: "attached" });
  await shownName(page);
}

export function nameField(page: Page): Locator {
  return page.getByRole("textbox", { name: "Your name" });
}

export function messageBox(page: Page): Locator {
  return page.getByRole("textbox", { name: "Message" });
}

export function messageList(page: Page): Locator {
  return page.getByRole("list", { name: "Messages" });
}

export function connectionStatus(page: Page): Locator {
  return page.getByRole("status");
}

/** The list item whose body is exactly `body`. */
export function messageItem(page: Page, body: string): Locator {
  return messageList(page)
    .getByRole("listitem")
    .filter({ has: page.getByText(body, { exact: true }) });
}

/** The saved name, once the profile has loaded (the field is disabled before). */
export async function shownName(page: Page): Promise<string> {
  const field = nameField(page);
  await field.and(page.locator(":enabled")).waitFor();
  return await field.inputValue();
}

/**
 * Types `body` and presses Enter, then waits until the server has accepted it:
 * the sender's list shows it and the composer has cleared its draft (which it
 * does only on the server's answer; it ignores Enter while a send is pending).
 */
export async function sendMessage(page: Page, body: string): Promise<void> {
  const box = messageBox(page);
  await box.fill(body);
  await box.press("Enter");
  await messageItem(page, body).waitFor();
  await page.waitForFunction(
    (field) => field?.value === "",
    (await box.elementHandle()) as JSHandle<PageField | null>,
  );
}

/** Types a new name and presses Enter; does not wait for the server. */
export async function rename(page: Page, name: string): Promise<void> {
  const field = nameField(page);
  await field.fill(name);
  await field.press("Enter");
}

export async function waitForMessage(page: Page, body: string): Promise<void> {
  await messageItem(page, body).waitFor();
}

/** Every message in the list, oldest first, as the page shows it now. */
export async function readMessages(page: Page): Promise<ShownMessage[]> {
  return await messageList(page)
    .getByRole("listitem")
    .evaluateAll((items: PageElement[]) =>
      items.map((item) => ({
        id: item.getAttribute("data-item-id") ?? "",
        author: item.querySelector(".message__author")?.textContent ?? "",
        body: item.querySelector(".message__body")?.textContent ?? "",
        mine: item.classList.contains("message--mine"),
        markedYou: (item.textContent ?? "").includes("(you)"),
      })),
    );
}

/**
 * The texts an element's `aria-describedby` points at: what a screen reader
 * reads after its label, and where the page puts a field's error.
 */
export async function descriptionOf(locator: Locator): Promise<string[]> {
  const ids = (await locator.getAttribute("aria-describedby")) ?? "";
  const page = locator.page();
  const texts: string[] = [];
  for (const id of ids.split(/\s+/).filter((id) => id !== "")) {
    texts.push((await page.locator(`[id="${id}"]`).textContent()) ?? "");
  }
  return texts;
}

/**
 * Identifies the document loaded in `page`: a reload or navigation makes a
 * new document with a new `performance.timeOrigin`, so an equal value later
 * proves the page updated live.
 */
export async function documentId(page: Page): Promise<number> {
  return await page.evaluate(() => performance.timeOrigin);
}

/** The session secret the page keeps in `localStorage` or `sessionStorage`. */
export async function storedSecret(
  page: Page,
  area: "local" | "session",
): Promise<string | null> {
  return await page.evaluate(
    ([area, key]) => {
      const { localStorage, sessionStorage } =
        globalThis as unknown as PageGlobals;
      return (area === "local" ? localStorage : sessionStorage).getItem(key);
    },
    [area, SESSION_STORAGE_KEY] as const,
  );
}
