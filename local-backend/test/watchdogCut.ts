/**
 * Runs host code as a syscall or an inline commit runs it, inside a
 * function's window, under a V8 watchdog that ends it at any call (no catch,
 * no finally), as when the machine stalls mid-window: first a busy spin of
 * `spinMs`, so the watchdog lands at random points of `work`, then `work`.
 * True when the watchdog cut it.
 *
 * Usage:
 *   if (cutAfterSpin(() => db.commit(writes), Math.random() * 1.5)) cuts++;
 *   db.recoverCut();
 */
import vm from "node:vm";
import { expect } from "vitest";

const context = vm.createContext({
  spinThenWork(spinMs: number, work: () => void) {
    const until = performance.now() + spinMs;
    while (performance.now() < until) {
      // the watchdog may fire here, or in the work
    }
    work();
  },
});

export function cutAfterSpin(
  work: () => void,
  spinMs: number,
  timeoutMs = 1,
): boolean {
  context.spinMs = spinMs;
  context.work = work;
  try {
    vm.runInContext("spinThenWork(spinMs, work)", context, {
      timeout: timeoutMs,
    });
    return false;
  } catch (error) {
    expect((error as { code?: string }).code).toBe(
      "ERR_SCRIPT_EXECUTION_TIMEOUT",
    );
    return true;
  } finally {
    context.work = undefined;
  }
}
