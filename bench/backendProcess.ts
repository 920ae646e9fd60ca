/**
 * A backend for the fan-out benchmarks, in its own process as users run it,
 * that also reports its own event-loop stalls (`monitorEventLoopDelay`) over
 * the IPC channel: `reset` starts a case, `stall` reports its longest delay
 * (and the CPU time used since `reset`),
 * `syncs` how many group-commit fsyncs it has made.
 *
 * Usage (from bench/fanout.ts): spawn with an IPC channel and the arguments
 * `<functions dir> <data dir>`; the first message is `{ type: "ready", url }`.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { startBackend } from "../local-backend/src/backend.ts";

const [functions, data] = process.argv.slice(2);
let syncs = 0;
const backend = await startBackend({
  functions,
  data,
  port: 0,
  // The chat's auth.config.ts names the site URL (Convex Auth signs tokens there).
  sitePort: 0,
  watch: false,
  logger: { info: () => undefined, error: (line) => console.error(line) },
  syncHook: (sync) => {
    syncs++;
    return sync();
  },
});
const delay = monitorEventLoopDelay({ resolution: 2 });
delay.enable();
const send = (message: object) => process.send!(message);
let cpuAtReset = process.cpuUsage();
send({ type: "ready", url: backend.url });
process.on("message", (message: { type: string }) => {
  switch (message.type) {
    case "reset":
      delay.reset();
      cpuAtReset = process.cpuUsage();
      send({ type: "reset" });
      return;
    case "syncs":
      send({ type: "syncs", count: syncs });
      return;
    case "stall":
      send({
        type: "stall",
        maxMs: delay.max / 1e6,
        p99Ms: delay.percentile(99) / 1e6,
        cpuMs: cpuMsSince(cpuAtReset),
      });
      return;
    case "stop":
      void backend.close().then(() => process.exit(0));
      return;
  }
});

function cpuMsSince(start: NodeJS.CpuUsage): number {
  const { user, system } = process.cpuUsage(start);
  return (user + system) / 1000;
}
