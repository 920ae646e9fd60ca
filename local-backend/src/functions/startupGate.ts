/**
 * Holds function calls that arrive before the first build is installed.
 *
 * The ports open before the functions are built (the build needs the port for
 * `CONVEX_CLOUD_URL`), so a client that reconnects the moment a restarted
 * backend listens would otherwise get "Could not find public function" for a
 * mutation it is re-sending, and lose it. Calls wait here instead, in arrival
 * order, and run once the build is in. The wait is bounded in time and in
 * number: past either bound a call fails with a message saying why, and
 * `close()` fails every waiting call when the backend stops.
 *
 * Usage:
 *   const gate = new StartupGate();
 *   await gate.wait();   // in every entry point
 *   gate.open();         // once the first build is installed
 */

/** How long a call may wait for the first build (a cold esbuild of a large app takes seconds). */
export const STARTUP_WAIT_MS = 60_000;
/** Calls held at once; more are refused rather than buffered without bound. */
export const STARTUP_MAX_WAITING = 10_000;

type Waiter = {
  resolve: () => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
};

export class StartupGate {
  #open = false;
  #closed: Error | null = null;
  readonly #waiting = new Set<Waiter>();

  get isOpen(): boolean {
    return this.#open;
  }

  /** Resolves at once when open; otherwise when `open()` is called, in arrival order. */
  wait(): Promise<void> {
    if (this.#open) return Promise.resolve();
    if (this.#closed !== null) return Promise.reject(this.#closed);
    if (this.#waiting.size >= STARTUP_MAX_WAITING) {
      return Promise.reject(
        new Error(
          `The local backend is still loading its functions and already holds ${STARTUP_MAX_WAITING} calls; try again shortly`,
        ),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiting.delete(waiter);
          reject(
            new Error(
              `The local backend did not finish loading its functions within ${STARTUP_WAIT_MS / 1000} s`,
            ),
          );
        }, STARTUP_WAIT_MS),
      };
      waiter.timer.unref();
      this.#waiting.add(waiter);
    });
  }

  open(): void {
    if (this.#open) return;
    this.#open = true;
    for (const waiter of this.#waiting) {
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
    this.#waiting.clear();
  }

  /** The backend is stopping before it ever opened: fail whoever is waiting. */
  close(reason: string): void {
    if (this.#open) return;
    this.#closed = new Error(reason);
    for (const waiter of this.#waiting) {
      clearTimeout(waiter.timer);
      waiter.reject(this.#closed);
    }
    this.#waiting.clear();
  }
}
