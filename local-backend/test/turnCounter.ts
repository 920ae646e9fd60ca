/**
 * Counts turns of the event loop (one `setImmediate` per check phase) until
 * stopped: how often a test's backend let other work run.
 *
 * Usage:
 *   const turns = new TurnCounter();
 *   await somethingLong();
 *   turns.stop(); // turns.count
 */
export class TurnCounter {
  count = 0;
  #running = true;

  constructor() {
    const tick = () => {
      if (!this.#running) return;
      this.count++;
      setImmediate(tick);
    };
    setImmediate(tick);
  }

  stop(): void {
    this.#running = false;
  }
}
