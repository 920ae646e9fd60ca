/**
 * One time budget for all of the sync layer's fan-out work: the hub's update
 * lanes and the frames released when a commit becomes durable run in slices of
 * at most `sliceMs` each, and every kind of work shares the same slice. So
 * however many lanes and outboxes have work, the event loop gets back control
 * every `sliceMs` to poll sockets (pings, HTTP, other clients' frames)
 * before the next slice.
 *
 * Slice lifecycle:
 * - a slice starts when work asks `open()` outside one (work arriving after
 *   idle starts at once), and schedules a `setImmediate`, its turn's end;
 * - it runs out at its deadline: `open()` is false from then on, and waiting
 *   work `await`s `next()`;
 * - it ends at its turn's end, after the event loop has polled I/O: `next()`
 *   resolves there, and the first waiter to ask `open()` starts the next
 *   slice, which the others share. A slice is thus one stretch of work
 *   without a poll in between, at most `sliceMs` (plus the item that crossed
 *   the deadline).
 *
 * Usage:
 *   while (work.length > 0) {
 *     if (!slices.open()) { await slices.next(); continue; }
 *     work.shift()!();
 *   }
 */
import { performance } from "node:perf_hooks";

export class TimeSlices {
  readonly #sliceMs: number;
  /** `performance.now()` at which the current slice runs out. */
  #deadline = 0;
  /**
   * The current slice's turn's end (a `setImmediate`), resolved there.
   * - null: no slice is running
   * - set when a slice starts; cleared, with the deadline, by that immediate
   */
  #turn: Promise<void> | null = null;

  constructor(sliceMs: number) {
    this.#sliceMs = sliceMs;
  }

  /** When the current (or last) slice runs out, as `performance.now()`. */
  get deadline(): number {
    return this.#deadline;
  }

  /** Whether work may run now: within a slice, or by starting one when none runs. */
  open(): boolean {
    if (this.#turn !== null) return performance.now() < this.#deadline;
    this.#deadline = performance.now() + this.#sliceMs;
    this.#turn = new Promise((resolve) =>
      setImmediate(() => {
        this.#turn = null;
        this.#deadline = 0;
        resolve();
      }),
    );
    return true;
  }

  /** Resolves once the event loop has polled I/O after the current slice. */
  next(): Promise<void> {
    return this.#turn ?? Promise.resolve();
  }
}
