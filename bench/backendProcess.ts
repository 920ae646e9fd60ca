/**
 * A backend for the fan-out benchmarks, in its own process as users run it,
 * that also reports its own event-loop stalls (`monitorEventLoopDelay`) over
 * the IPC channel: `reset` starts a case, `stall` reports its longest delay.
 *
 * Usage (from bench/fanout.ts): spawn with an IPC channel and the arguments
 * `<functions dir> <data dir>`; the first message is `{ type: "ready", url }`.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { startBackend } from "../local-backend/src/backend.ts";

const [functions, data] = process.argv.slice(2);
const backend = await startBackend({
  functions,
  data,
  port: 0,
  // The chat's auth.config.ts names the site URL (Convex Auth signs tokens there).
  sitePort: 0,
  watch: false,
  logger: { info: () => undefined, error: (line) => console.error(line) },
});
const delay = monitorEventLoopDelay({ resolution: 2 });
delay.enable();
const send = (message: object) => process.send!(message);
send({ type: "ready", url: backend.url });
process.on("message", (message: { type: string }) => {
  switch (message.type) {
    case "reset":
      delay.reset();
      send({ type: "reset" });
      return;
    case "stall":
      send({
        type: "stall",
        maxMs: delay.max / 1e6,
        p99Ms: delay.percentile(99) / 1e6,
      });
      return;
    case "stop":
      void backend.close().then(() => process.exit(0));
      return;
  }
});
