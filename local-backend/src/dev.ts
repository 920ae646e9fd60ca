/**
 * `npm run dev`: the embedded backend and Vite in one process, so one Ctrl-C
 * stops both. The page gets the backend's URL as `VITE_CONVEX_URL`.
 *
 * With `VITE_CONVEX_URL` set, in the environment or in `.env.local` (where
 * `npx convex dev` writes it), only Vite starts and the page talks to that
 * deployment instead.
 */
import { createServer, loadEnv, type ViteDevServer } from "vite";
import { startBackend, StartupError, type Backend } from "./backend.ts";
import { missingAuthKeys } from "./commands.ts";
import { logUnhandledRejections, onShutdownSignal } from "./shutdown.ts";

const VITE_PORT = 5173;
const DATA_DIR = ".convex-local";

async function main(): Promise<void> {
  let backend: Backend | null = null;
  let vite: ViteDevServer | null = null;
  onShutdownSignal(() => Promise.all([vite?.close(), backend?.close()]));
  const deployment = loadEnv(
    "development",
    process.cwd(),
    "VITE_",
  ).VITE_CONVEX_URL;
  if (deployment === undefined || deployment === "") {
    backend = await startBackend({
      functions: "convex",
      data: DATA_DIR,
      port: 3210,
      sitePort: 3211,
      // Sign-in works on a fresh clone: the keys `npm run backend -- auth-keys` sets.
      env: missingAuthKeys(DATA_DIR),
    });
    process.env.VITE_CONVEX_URL = backend.url;
    console.log(`Convex local backend ready at ${backend.url}`);
  } else {
    console.log(
      `Using the Convex deployment at ${deployment} (VITE_CONVEX_URL)`,
    );
  }

  try {
    vite = await createServer({
      server: { port: VITE_PORT, strictPort: true },
    });
    await vite.listen();
  } catch (error) {
    await backend?.close();
    const code = (error as { code?: string }).code;
    throw code === "EADDRINUSE" ||
      /already in use/i.test((error as Error).message)
      ? new StartupError(
          `Port ${VITE_PORT} is in use; stop the other dev server first`,
        )
      : error;
  }
  vite.printUrls();
  console.log(
    `\n  Chat: http://localhost:${VITE_PORT}  (Ctrl-C stops the page and the backend)\n`,
  );
}

logUnhandledRejections();

main().catch((error: unknown) => {
  console.error(
    error instanceof StartupError ? `error: ${error.message}` : error,
  );
  process.exit(1);
});
