/**
 * `npm run backend -- [--functions DIR] [--data DIR] [--port N] [--site-port N] [--host H]`
 *
 * Runs the embedded Convex-compatible backend until SIGINT or SIGTERM. Start-up
 * problems print one line and exit with status 1.
 */
import { parseArgs } from "node:util";
import { type Backend, startBackend, StartupError } from "./backend.ts";
import { logUnhandledRejections, onShutdownSignal } from "./shutdown.ts";

const USAGE = `Usage: npm run backend -- [options]

Runs the app's Convex functions on this machine (the embedded local backend).

Options:
  --functions DIR   the Convex functions folder (default: convex)
  --data DIR        where the SQLite database lives (default: .convex-local)
  --port N          deployment port for clients (default: 3210; 0 picks one)
  --site-port N     HTTP actions port (default: 3211; 0 picks one)
  --host H          interface to listen on (default: 127.0.0.1)
  --no-watch        do not reload when the functions change
  -h, --help        show this help`;

function parsePort(
  value: string | undefined,
  flag: string,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new StartupError(
      `${flag} must be a port number from 0 to 65535, got "${value}"`,
    );
  }
  return port;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      functions: { type: "string" },
      data: { type: "string" },
      port: { type: "string" },
      "site-port": { type: "string" },
      host: { type: "string" },
      "no-watch": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help === true) {
    console.log(USAGE);
    return;
  }
  // Installed before start-up: a SIGTERM that arrives while the backend starts
  // (or right after the ready line) still shuts down cleanly.
  let backend: Backend | null = null;
  onShutdownSignal(() => backend?.close() ?? Promise.resolve());

  backend = await startBackend({
    functions: values.functions ?? "convex",
    data: values.data ?? ".convex-local",
    port: parsePort(values.port, "--port", 3210),
    sitePort: parsePort(values["site-port"], "--site-port", 3211),
    host: values.host ?? "127.0.0.1",
    watch: values["no-watch"] !== true,
  });
  console.log(`Convex local backend ready at ${backend.url}`);
  console.log(`  VITE_CONVEX_URL=${backend.url}`);
  if (backend.siteUrl !== null) {
    console.log(`  HTTP actions at ${backend.siteUrl}`);
  }
}

logUnhandledRejections();

main().catch((error: unknown) => {
  if (
    error instanceof StartupError ||
    (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
  ) {
    console.error(`error: ${(error as Error).message}`);
  } else {
    console.error(error);
  }
  process.exit(1);
});
