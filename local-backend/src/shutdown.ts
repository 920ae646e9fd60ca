/**
 * Process lifecycle for the command-line entry points (`cli.ts`, `dev.ts`).
 *
 * Usage (before anything starts, so an early signal still exits cleanly):
 *   logUnhandledRejections();
 *   onShutdownSignal(() => backend?.close() ?? Promise.resolve());
 */

/** On SIGINT or SIGTERM, runs `close` once, then exits 0 (1 if closing failed). */
export function onShutdownSignal(close: () => Promise<unknown>): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: shutting down`);
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

/**
 * A safety net: a promise we failed to handle is a bug to report, not a reason
 * to drop every other client's connection (Node would exit by default).
 */
export function logUnhandledRejections(): void {
  process.on("unhandledRejection", (reason) => {
    console.error(
      "local backend: unhandled rejection (a bug; please report it):",
      reason,
    );
  });
}
