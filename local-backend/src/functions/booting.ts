/**
 * A worker's boot, as both worker pools (offThread.ts, nodeRuntime.ts) track
 * it: a promise that the pool settles from the worker's first message or its
 * error, and that rejects quietly when nobody waits for it.
 *
 * Usage:
 *   const boot = booting();
 *   worker.on("message", (m) => m.type === "ready" && boot.ready());
 *   worker.on("error", boot.failed);
 *   await boot.promise;
 */
export type Booting = {
  promise: Promise<void>;
  ready: () => void;
  failed: (error: Error) => void;
};

export function booting(): Booting {
  let ready!: () => void;
  let failed!: (error: Error) => void;
  const promise = new Promise<void>((resolve, reject) => {
    ready = resolve;
    failed = reject;
  });
  promise.catch(() => undefined);
  return { promise, ready: () => ready(), failed: (error) => failed(error) };
}
