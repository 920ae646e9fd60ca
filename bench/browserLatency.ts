/**
 * `npx tsx bench/browserLatency.ts [--rounds N]`: how long a chat message
 * takes from the sender pressing Enter to the message being in the other
 * person's "Messages" list, in real Chromium. Two browser contexts (two
 * people) against the embedded backend and the built page (`startStack`, as in
 * the e2e tests), everything on 127.0.0.1.
 *
 * Each page timestamps in its own renderer, so driving it from Node adds
 * nothing: the sender records the Enter keydown's `event.timeStamp`, and a
 * MutationObserver in each page records when the message's list item is
 * inserted. Both are taken as `performance.timeOrigin + t`, epoch milliseconds
 * from the same machine clock; the skew between the two renderers is
 * estimated against Node's clock and printed with the results.
 *
 * Cases (N rounds each, one message in flight at a time, after 5 warm-up rounds):
 * - send → visible in 2nd browser, 2 contexts
 * - send → in sender's own list, 2 contexts (the mutation's round trip)
 */
import os from "node:os";
import { parseArgs } from "node:util";
import type { Page } from "playwright-core";
import { launchBrowser, PageErrorLog } from "../e2e/helpers/browser.ts";
import { openChat, sendMessage, UI_TIMEOUT_MS } from "../e2e/helpers/chat.ts";
import type { PageElement, PageGlobals } from "../e2e/helpers/pageGlobals.ts";
import { startStack } from "../e2e/helpers/stack.ts";
import { formatSummary, summarize } from "./stats.ts";

const DEFAULT_ROUNDS = 50;
const MAX_ROUNDS = 1000;
const WARM_UP_ROUNDS = 5;
/** Samples per clock-offset estimate; the one with the shortest round trip wins. */
const CLOCK_SAMPLES = 20;

/** What the probe keeps on the page's `globalThis`. */
type Probe = {
  /** Message body → epoch ms when its list item was inserted. */
  arrivals: Record<string, number>;
  /** Epoch ms of the last Enter keydown, or null. */
  enterAt: number | null;
};
type ProbeGlobals = PageGlobals & { __latencyProbe?: Probe };

function parseRounds(): number {
  const { values } = parseArgs({
    options: { rounds: { type: "string" } },
    strict: true,
  });
  const rounds = Number(values.rounds ?? DEFAULT_ROUNDS);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > MAX_ROUNDS) {
    throw new Error(
      `--rounds must be a whole number from 1 to ${MAX_ROUNDS}, got "${values.rounds}"`,
    );
  }
  return rounds;
}

/** Records list insertions and Enter presses in the page, in epoch ms. */
async function installProbe(page: Page): Promise<void> {
  await page.evaluate(() => {
    const g = globalThis as unknown as ProbeGlobals;
    const probe: Probe = { arrivals: {}, enterAt: null };
    g.__latencyProbe = probe;
    g.addEventListener(
      "keydown",
      (event) => {
        if (event.key === "Enter") {
          probe.enterAt = performance.timeOrigin + event.timeStamp;
        }
      },
      { capture: true },
    );
    new g.MutationObserver((records) => {
      const now = performance.timeOrigin + performance.now();
      for (const record of records) {
        for (const node of Array.from(record.addedNodes)) {
          if (node.nodeType !== 1) continue;
          const item = node as PageElement;
          if (item.closest('ol[aria-label="Messages"] > li') !== item) continue;
          const body = item.querySelector(".message__body")?.textContent;
          if (body != null && !(body in probe.arrivals)) {
            probe.arrivals[body] = now;
          }
        }
      }
    }).observe(g.document.body, { childList: true, subtree: true });
  });
}

async function arrivalOf(page: Page, body: string): Promise<number> {
  const handle = await page.waitForFunction(
    (body) =>
      (globalThis as unknown as ProbeGlobals).__latencyProbe?.arrivals[body],
    body,
    { timeout: UI_TIMEOUT_MS },
  );
  return (await handle.jsonValue()) as number;
}

async function lastEnterOf(page: Page): Promise<number> {
  const enterAt = await page.evaluate(
    () => (globalThis as unknown as ProbeGlobals).__latencyProbe?.enterAt,
  );
  if (typeof enterAt !== "number") {
    throw new Error("The sender's page saw no Enter keydown.");
  }
  return enterAt;
}

/**
 * The page's epoch clock minus Node's, from the sample with the shortest
 * round trip (error at most half of it).
 */
async function clockOffset(
  page: Page,
): Promise<{ offset: number; error: number }> {
  let best = { offset: 0, error: Infinity };
  for (let i = 0; i < CLOCK_SAMPLES; i++) {
    const before = performance.timeOrigin + performance.now();
    const pageNow = await page.evaluate(
      () => performance.timeOrigin + performance.now(),
    );
    const after = performance.timeOrigin + performance.now();
    const error = (after - before) / 2;
    if (error < best.error)
      best = { offset: pageNow - (before + error), error };
  }
  return best;
}

async function main(): Promise<void> {
  const rounds = parseRounds();
  const stack = await startStack();
  const browser = await launchBrowser();
  const errors = new PageErrorLog();
  try {
    const sender = await openChat(await browser.newContext(), stack.pageUrl, {
      errors,
    });
    const receiver = await openChat(await browser.newContext(), stack.pageUrl, {
      errors,
    });
    await Promise.all([installProbe(sender), installProbe(receiver)]);

    const toReceiver: number[] = [];
    const toSender: number[] = [];
    for (let i = 0; i < WARM_UP_ROUNDS + rounds; i++) {
      const body = `latency ${i} ${Math.random().toString(36).slice(2)}`;
      await sendMessage(sender, body);
      const received = await arrivalOf(receiver, body);
      const echoed = await arrivalOf(sender, body);
      const pressed = await lastEnterOf(sender);
      if (i < WARM_UP_ROUNDS) continue;
      toReceiver.push(received - pressed);
      toSender.push(echoed - pressed);
    }

    const [senderClock, receiverClock] = [
      await clockOffset(sender),
      await clockOffset(receiver),
    ];
    errors.assertClean();

    const cpus = os.cpus();
    console.log(
      `machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, ${os.platform()} ${os.release()}, Node ${process.version}, Chromium ${browser.version()}`,
    );
    console.log(
      `backend, page server and Playwright in this process; headless Chromium; 127.0.0.1; ${rounds} rounds after ${WARM_UP_ROUNDS} warm-up; times in ms (p50 = median)\n`,
    );
    console.log(
      formatSummary(
        "send → visible in 2nd browser, 2 contexts",
        summarize(toReceiver),
      ),
    );
    console.log(
      formatSummary(
        "send → in sender's own list, 2 contexts",
        summarize(toSender),
      ),
    );
    const skew = receiverClock.offset - senderClock.offset;
    const skewError = receiverClock.error + senderClock.error;
    console.log(
      `\nclock skew receiver − sender: ${skew.toFixed(2)} ms (± ${skewError.toFixed(2)} ms), already inside the numbers above`,
    );
  } finally {
    await browser.close();
    await stack.close();
  }
}

await main();
