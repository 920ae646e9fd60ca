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

const VITE_PORT = 5173;

async function main(): Promise<void> {
  let backend: Backend | null = null;
  const deployment = loadEnv(
    "development",
    process.cwd(),
    "VITE_",
  ).VITE_CONVEX_URL;
  if (deployment === undefined || deployment === "") {
    backend = await startBackend({
      functions: "convex",
      data: ".convex-local",
      port: 3210,
      sitePort: 3211,
    });
    process.env.VITE_CONVEX_URL = backend.url;
    console.log(`Convex local backend ready at ${backend.url}`);
  } else {
    console.log(
      `Using the Convex deployment at ${deployment} (VITE_CONVEX_URL)`,
    );
  }

  let vite: ViteDevServer;
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

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    Promise.all([vite.close(), backend?.close()]).then(
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

// A safety net: a promise we failed to handle is a bug to report, not a
// reason to drop every other client's connection.
process.on("unhandledRejection", (reason) => {
  console.error(
    "local backend: unhandled rejection (a bug; please report it):",
    reason,
  );
});

main().catch((error: unknown) => {
  console.error(
    error instanceof StartupError ? `error: ${error.message}` : error,
  );
  process.exit(1);
});
