/**
 * The Int32Array an isolate worker shares with the main thread (offThread.ts,
 * isolateWorker.ts). Answers travel as messages; these slots only wake the
 * worker and say whether it is waiting on us.
 */

/** Counts answers posted on the worker's `replies` port; the worker waits on it. */
export const ANSWERS = 0;
/**
 * 1 from the moment the worker posts a blocking request or `done` until the
 * main thread answers it or starts the next run: the worker is not running,
 * whatever time the request spends in the main thread's queue. Set by the
 * worker, cleared by the main thread (before it answers, so a cleared slot
 * never hides a worker that runs again).
 */
export const WAITING = 1;
export const SIGNAL_SLOTS = 2;
