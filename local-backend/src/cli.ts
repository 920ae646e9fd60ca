/**
 * `npm run backend -- [--functions DIR] [--data DIR] [--port N] [--site-port N] [--host H]`
 * `npm run backend -- env set NAME VALUE | get NAME | list | remove NAME`, `admin-key`, `auth-keys`
 *
 * Runs the embedded Convex-compatible backend until SIGINT or SIGTERM, or runs
 * one command on its data folder (`commands.ts`). Start-up problems print one
 * line and exit with status 1.
 */
import fs from "node:fs";
import { parseArgs } from "node:util";
import { type Backend, startBackend, StartupError } from "./backend.ts";
import { COMMAND_USAGE, COMMANDS, runCommand } from "./commands.ts";
import { EnvironmentError, parseEnvFile } from "./storage/environment.ts";
import { logUnhandledRejections, onShutdownSignal } from "./shutdown.ts";

const USAGE = `Usage: npm run backend -- [options]
       npm run backend -- <command> [--data DIR]

Runs the app's Convex functions on this machine (the embedded local backend).

Options:
  --functions DIR   the Convex functions folder (default: convex)
  --data DIR        where the SQLite database lives (default: .convex-local)
  --port N          deployment port for clients (default: 3210; 0 picks one)
  --site-port N     HTTP actions port (default: 3211; 0 picks one)
  --host H          interface to listen on (default: 127.0.0.1)
  --env-file FILE   set the environment variables in FILE (NAME=value lines) first
  --no-watch        do not reload when the functions change
  -h, --help        show this help

${COMMAND_USAGE}`;

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
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      "env-file": { type: "string" },
      force: { type: "boolean" },
      "site-url": { type: "string" },
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
  if (positionals.length > 0) {
    if (!COMMANDS.includes(positionals[0])) {
      throw new StartupError(
        `unknown command "${positionals[0]}"; see npm run backend -- --help`,
      );
    }
    process.exitCode = runCommand(
      positionals,
      {
        data: values.data ?? ".convex-local",
        force: values.force,
        siteUrl: values["site-url"],
      },
      { out: (l) => console.log(l), err: (l) => console.error(l) },
    );
    return;
  }
  let env: Record<string, string> | undefined;
  if (values["env-file"] !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(values["env-file"], "utf8");
    } catch (error) {
      throw new StartupError(
        `Cannot read --env-file ${values["env-file"]}: ${(error as Error).message}`,
      );
    }
    env = parseEnvFile(text);
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
    ...(env !== undefined ? { env } : {}),
  });
  console.log(`Convex local backend ready at ${backend.url}`);
  console.log(`  VITE_CONVEX_URL=${backend.url}`);
  console.log(`  Admin key: ${backend.adminKey}`);
  if (backend.siteUrl !== null) {
    console.log(`  HTTP actions at ${backend.siteUrl}`);
  }
}

logUnhandledRejections();

main().catch((error: unknown) => {
  if (
    error instanceof StartupError ||
    error instanceof EnvironmentError ||
    (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
  ) {
    console.error(`error: ${(error as Error).message}`);
  } else {
    console.error(error);
  }
  process.exit(1);
});
