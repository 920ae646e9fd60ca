/**
 * Sign-up to history visible, in real Chromium: how long from a guest
 * clicking "Sign up" in the dialog until, after a reload, the page shows the
 * messages they wrote as a guest as theirs ("(you)"). Beside it, measured in
 * the same run on the same stack, the baseline: a guest who does not sign up
 * reloads until the same history shows as theirs. Each round is a new person
 * (browser context) with one message, on the embedded backend and the built
 * page (`startStack`, as in the e2e tests), all on 127.0.0.1.
 *
 * Phases of the sign-up case: the click until the page shows the member
 * badge (prepareUpgrade, Convex Auth's signIn with the password hash, the
 * token accepted, afterSignIn rotating the secret), then the reload until
 * the old message is marked "(you)".
 *
 * Usage: npm run bench -- --only=signup [-- --rounds=N]
 *   or   npx tsx bench/signUpLatency.ts [--rounds=N]
 */
import os from "node:os";
import type { Browser, Page } from "playwright-core";
import {
  accountDialog,
  PASSWORD,
  signOutButton,
  signUpButton,
} from "../e2e/helpers/account.ts";
import { launchBrowser, PageErrorLog } from "../e2e/helpers/browser.ts";
import {
  messageList,
  openChat,
  sendMessage,
  waitUntilReady,
} from "../e2e/helpers/chat.ts";
import { startStack, type Stack } from "../e2e/helpers/stack.ts";
import { formatSummary, summarize } from "./stats.ts";

const DEFAULT_ROUNDS = 20;
const MAX_ROUNDS = 200;
const WARM_UP_ROUNDS = 2;

function parseRounds(): number {
  const arg = process.argv.find((a) => a.startsWith("--rounds="));
  const rounds = Number(arg?.slice("--rounds=".length) ?? DEFAULT_ROUNDS);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > MAX_ROUNDS) {
    throw new Error(
      `--rounds must be a whole number from 1 to ${MAX_ROUNDS}, got "${arg}"`,
    );
  }
  return rounds;
}

/** Resolves once `body` is listed and marked as the viewer's own. */
async function historyIsMine(page: Page, body: string): Promise<void> {
  await messageList(page)
    .getByRole("listitem")
    .filter({ hasText: body })
    .filter({ hasText: "(you)" })
    .waitFor();
}

type Round = { total: number; toBadge: number; reload: number };

async function guestWithHistory(
  browser: Browser,
  stack: Stack,
  errors: PageErrorLog,
  body: string,
): Promise<Page> {
  const page = await openChat(await browser.newContext(), stack.pageUrl, {
    errors,
  });
  await sendMessage(page, body);
  return page;
}

async function reloadUntilMine(page: Page, body: string): Promise<number> {
  const start = performance.now();
  await page.reload();
  await waitUntilReady(page);
  await historyIsMine(page, body);
  return performance.now() - start;
}

async function signUpRound(
  browser: Browser,
  stack: Stack,
  errors: PageErrorLog,
  i: number,
): Promise<Round> {
  const body = `before signing up ${i} ${Math.random().toString(36).slice(2)}`;
  const page = await guestWithHistory(browser, stack, errors, body);
  await signUpButton(page).click();
  const dialog = accountDialog(page, "Sign up to keep your name");
  await dialog
    .getByLabel("E-mail")
    .fill(`bench-${i}-${Date.now()}@example.test`);
  await dialog.getByLabel("Password").fill(PASSWORD);
  const submit = dialog.getByRole("button", { name: "Sign up", exact: true });

  const start = performance.now();
  await submit.click();
  await signOutButton(page).waitFor();
  const toBadge = performance.now() - start;
  const reload = await reloadUntilMine(page, body);
  const total = performance.now() - start;
  await page.context().close();
  return { total, toBadge, reload };
}

async function baselineRound(
  browser: Browser,
  stack: Stack,
  errors: PageErrorLog,
  i: number,
): Promise<number> {
  const body = `guest only ${i} ${Math.random().toString(36).slice(2)}`;
  const page = await guestWithHistory(browser, stack, errors, body);
  const reload = await reloadUntilMine(page, body);
  await page.context().close();
  return reload;
}

export async function signUpBenchmarks(rounds = parseRounds()): Promise<void> {
  const stack = await startStack();
  const browser = await launchBrowser();
  const errors = new PageErrorLog();
  try {
    const signUps: Round[] = [];
    const baseline: number[] = [];
    // Interleaved, so both cases see the same machine load.
    for (let i = 0; i < WARM_UP_ROUNDS + rounds; i++) {
      const round = await signUpRound(browser, stack, errors, i);
      const guest = await baselineRound(browser, stack, errors, i);
      if (i < WARM_UP_ROUNDS) continue;
      signUps.push(round);
      baseline.push(guest);
    }
    errors.assertClean();

    const cpus = os.cpus();
    console.log(
      `machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, Node ${process.version}, Chromium ${browser.version()}; backend, page server and Playwright in this process; 127.0.0.1; ${rounds} rounds after ${WARM_UP_ROUNDS} warm-up, one new person each; ms\n`,
    );
    console.log(
      formatSummary(
        "sign-up click → reloaded page shows old messages as (you)",
        summarize(signUps.map((r) => r.total)),
      ),
    );
    console.log(
      formatSummary(
        "  of which: click → member badge (signed up, secret rotated)",
        summarize(signUps.map((r) => r.toBadge)),
      ),
    );
    console.log(
      formatSummary(
        "  of which: reload → old messages shown as (you)",
        summarize(signUps.map((r) => r.reload)),
      ),
    );
    console.log(
      formatSummary(
        "baseline: a guest's reload → old messages shown as (you)",
        summarize(baseline),
      ),
    );
  } finally {
    await browser.close();
    await stack.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await signUpBenchmarks();
}
