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
 * - it ends at its turn's end, after the event loop has run its timers and
 *   polled I/O: `next()` resolves there, and the first waiter to ask `open()`
 *   starts the next slice, which the others share. A slice is thus one
 *   stretch of work without a poll in between, at most `sliceMs` (plus the
 *   item that crossed the deadline).
 * - a slice that started in the poll phase (a socket's frame, a finished
 *   fsync) would see its `setImmediate` in that same turn's check phase, so
 *   the next slice would follow it with no timer or poll in between: one
 *   turn of two slices, twice the stall. A timer armed with the slice tells
 *   the turn's end whether the loop has been through its timers (and so its
 *   poll) since; if not, the timer ends the turn with a `setImmediate` of
 *   its own (after that turn's poll), rather than spinning the loop.
 * - work may end a slice early (`end()`) to let the loop poll now (a lane
 *   whose frames wait for an fsync that has returned): that turn ends at
 *   the first check phase after a poll, without waiting for the timer.
 *
 * Work that pauses between turns (a query run whose window ended) goes on
 * through `later`: in a later turn, inside a slice, each continuation in an
 * immediate of its own, so that however many paused in one turn, the next
 * runs one slice's worth of them (and the one that crosses the deadline),
 * not all of them back to back.
 *
 * Usage:
 *   while (work.length > 0) {
 *     if (!slices.open()) { await slices.next(); continue; }
 *     work.shift()!();
 *   }
 *   slices.later(() => resolve(value));   // a paused run goes on
 */
import { performance } from "node:perf_hooks";

export class TimeSlices {
  readonly #sliceMs: number;
  /** `performance.now()` at which the current slice runs out. */
  #deadline = 0;
  /**
   * The current slice's turn's end (a `setImmediate` after a timers
   * phase), resolved there.
   * - null: no slice is running
   * - set when a slice starts; cleared, with the deadline, at that turn's end
   */
  #turn: Promise<void> | null = null;
  /** Ends the current slice's turn; null once `end()` has asked for it (or none runs). */
  #endTurn: (() => void) | null = null;

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
    // The turn ends at the first check phase after both the slice's own
    // `setImmediate` and a timers phase: the immediate when the timer has
    // already run, else one the timer schedules.
    let timersRan = false;
    let immediateRan = false;
    this.#turn = new Promise((resolve) => {
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        this.#turn = null;
        this.#endTurn = null;
        this.#deadline = 0;
        resolve();
      };
      this.#endTurn = end;
      setTimeout(() => {
        timersRan = true;
        if (immediateRan) setImmediate(end);
      }, 0);
      setImmediate(() => {
        immediateRan = true;
        if (timersRan) end();
      });
    });
    return true;
  }

  /**
   * Ends the current slice now: work waits for the next turn (`next()`),
   * which comes as soon as the event loop has polled I/O once, not at the
   * slice's timer (up to 1 ms later: Node's timers have 1 ms steps). Work
   * that ends a slice early does so for that poll (a finished fsync's
   * answer is taken there), and what that poll hands over (the frames it
   * made durable) must not then wait out the timer of a slice that did
   * nothing: a lane that ended its slice for an fsync's answer held the
   * room's frames and the sender's answer 1.1 ms longer.
   */
  end(): void {
    const end = this.#endTurn;
    if (end === null) return;
    this.#deadline = 0;
    this.#endTurn = null;
    // An immediate set in a check phase runs in the next turn's, after its
    // poll; one set in any other phase runs in this turn's, before the
    // next poll. The second immediate always comes after a poll.
    setImmediate(() => setImmediate(end));
  }

  /**
   * Runs `resume` in a later turn of the event loop, once a slice is open
   * there (it may start one): each in an immediate of its own, so each sees
   * the slice as the ones before it left it.
   */
  later(resume: () => void): void {
    const go = (): void => {
      if (this.open()) resume();
      else void this.next().then(() => setImmediate(go));
    };
    setImmediate(go);
  }

  /** Resolves once the event loop has polled I/O after the current slice. */
  next(): Promise<void> {
    return this.#turn ?? Promise.resolve();
  }
}
