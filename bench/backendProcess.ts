/**
 * A backend for the fan-out benchmarks, in its own process as users run it,
 * that also reports its own event-loop stalls (`loopMonitor.ts`) over
 * the IPC channel: `reset` starts a case, `stall` reports its longest delay,
 * how much of it the main thread was on a CPU, and the CPU time used since `reset`;
 * `syncs` how many group-commit fsyncs it has made; `heap` the V8 heap in use
 * (plus ArrayBuffers and other external memory) after two full collections.
 *
 * Usage (from bench/fanout.ts): spawn with an IPC channel and the arguments
 * `<functions dir> <data dir>`; the first message is `{ type: "ready", url }`.
 */
import v8 from "node:v8";
import vm from "node:vm";
import { startBackend } from "../local-backend/src/backend.ts";
import { LoopMonitor } from "./loopMonitor.ts";

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
const loop = new LoopMonitor();
// A full collection on request (`heap`), without starting the process with --expose-gc.
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
const send = (message: object) => process.send!(message);
send({ type: "ready", url: backend.url });
process.on("message", (message: { type: string }) => {
  switch (message.type) {
    case "reset":
      loop.reset();
      send({ type: "reset" });
      return;
    case "syncs":
      send({ type: "syncs", count: syncs });
      return;
    case "stall":
      send({ type: "stall", ...loop.stall() });
      return;
    case "heap": {
      gc();
      gc();
      const usage = process.memoryUsage();
      send({ type: "heap", bytes: usage.heapUsed + usage.external });
      return;
    }
    case "stop":
      void backend.close().then(() => process.exit(0));
      return;
  }
});
