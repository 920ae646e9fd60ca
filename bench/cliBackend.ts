/**
 * The backend as users run it (`npm run backend`): the CLI in its own
 * process on free ports, resolved at its ready line.
 *
 * Usage:
 *   const { url, child } = await spawnCliBackend(dataDir);
 *   child.kill("SIGTERM");
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "..");
const START_TIMEOUT_MS = 30_000;

export async function spawnCliBackend(
  data: string,
  /** A first start that installs a schema over existing data backfills its indexes first. */
  startTimeoutMs = START_TIMEOUT_MS,
): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "local-backend/src/cli.ts",
      "--data",
      data,
      "--port",
      "0",
      "--site-port",
      "0",
      "--no-watch",
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let output = "";
    const timer = setTimeout(
      () => reject(new Error(`backend did not start:\n${output}`)),
      startTimeoutMs,
    );
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /ready at (http:\/\/\S+)/.exec(output);
      if (match !== null) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`backend exited with ${code}:\n${output}`));
    });
  });
  return { url, child };
}
