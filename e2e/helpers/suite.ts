/**
 * One stack and one Chromium for a whole e2e file, with fresh browser
 * contexts (people) per test and the pages' errors checked after each one.
 * A stack or browser that cannot start fails every test with the reason,
 * rather than marking them skipped.
 *
 * ```ts
 * const suite = browserSuite();
 * test("...", async () => {
 *   const page = await suite.openPerson();
 * });
 * ```
 */
import type {
  Browser,
  BrowserContext,
  BrowserContextOptions,
  Page,
} from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { launchBrowser, PageErrorLog } from "./browser.ts";
import { openChat } from "./chat.ts";
import { startStack, type Stack, type StackOptions } from "./stack.ts";

export type BrowserSuite = {
  stack: () => Stack;
  /** A new person: a browser context with its own storage. */
  newPerson: (options?: BrowserContextOptions) => Promise<BrowserContext>;
  /** A new person with the chat open and ready. */
  openPerson: (search?: string) => Promise<Page>;
  /** Replaces this test's error log, e.g. to allow an expected console error. */
  expectErrors: (allowed: readonly RegExp[]) => PageErrorLog;
  errors: () => PageErrorLog;
};

export function browserSuite(options: StackOptions = {}): BrowserSuite {
  let stack: Stack | undefined;
  let browser: Browser | undefined;
  let setupFailure: Error | null = null;
  let contexts: BrowserContext[] = [];
  let errors = new PageErrorLog();

  beforeAll(async () => {
    // Failing here would only mark the tests skipped; a missing Chromium must
    // fail each of them instead, so the reason is kept for `beforeEach`.
    const [stackStart, browserLaunch] = await Promise.allSettled([
      startStack(options),
      launchBrowser(),
    ]);
    if (stackStart.status === "fulfilled") stack = stackStart.value;
    else setupFailure = asError(stackStart.reason);
    if (browserLaunch.status === "fulfilled") browser = browserLaunch.value;
    else setupFailure = asError(browserLaunch.reason);
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.close();
  });

  beforeEach(() => {
    contexts = [];
    errors = new PageErrorLog();
    if (setupFailure !== null) throw setupFailure;
  });

  afterEach(async () => {
    await Promise.all(contexts.map((context) => context.close()));
    errors.assertClean();
  });

  const newPerson = async (contextOptions?: BrowserContextOptions) => {
    const context = await browser!.newContext(contextOptions);
    contexts.push(context);
    return context;
  };
  return {
    stack: () => stack!,
    newPerson,
    openPerson: async (search?: string) =>
      await openChat(await newPerson(), stack!.pageUrl, { errors, search }),
    expectErrors: (allowed) => (errors = new PageErrorLog(allowed)),
    errors: () => errors,
  };
}

function asError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}
