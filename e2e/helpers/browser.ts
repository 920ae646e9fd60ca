/**
 * Debian's Chromium driven by `playwright-core` (Playwright's own browser
 * downloads cannot reach the network here, and CI installs the same package),
 * plus a log of what went wrong inside the pages.
 *
 * ```ts
 * const browser = await launchBrowser();
 * const errors = new PageErrorLog();
 * errors.watch(page);
 * ...
 * errors.assertClean();
 * ```
 */
import { constants } from "node:fs";
import fs from "node:fs/promises";
import { chromium, type Browser, type Page } from "playwright-core";

export const CHROMIUM_PATH = "/usr/bin/chromium";

const CHROMIUM_ARGS = [
  // Containers and CI runners have no user namespaces for the sandbox.
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  // Nothing but the page under test touches the network.
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Throws one actionable line when Chromium is missing, never skips. */
export async function launchBrowser(): Promise<Browser> {
  try {
    await fs.access(CHROMIUM_PATH, constants.X_OK);
  } catch {
    throw new Error(
      `No Chromium at ${CHROMIUM_PATH}: the browser tests drive Debian's Chromium. Install it with \`apt-get install -y chromium\` (CI does the same).`,
    );
  }
  return await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
  });
}

/**
 * Collects uncaught exceptions, unhandled rejections and `console.error`
 * lines from every page it watches. Tests call `assertClean()` at the end, so
 * a page that breaks quietly fails the test that broke it.
 */
export class PageErrorLog {
  readonly #entries: string[] = [];
  readonly #allowed: readonly RegExp[];

  /** @param allowed Console errors a test expects, matched against the text. */
  constructor(allowed: readonly RegExp[] = []) {
    this.#allowed = allowed;
  }

  watch(page: Page): void {
    page.on("pageerror", (error) => {
      this.#entries.push(
        `page error in ${page.url()}: ${error.stack ?? String(error)}`,
      );
    });
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const text = message.text();
      if (this.#allowed.some((pattern) => pattern.test(text))) return;
      const { url, lineNumber } = message.location();
      this.#entries.push(
        `console.error in ${page.url()} (${url}:${lineNumber}): ${text}`,
      );
    });
  }

  get entries(): readonly string[] {
    return this.#entries;
  }

  assertClean(): void {
    if (this.#entries.length > 0) {
      throw new Error(
        `The page reported ${this.#entries.length} error(s):\n${this.#entries.join("\n")}`,
      );
    }
  }
}
