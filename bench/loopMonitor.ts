/**
 * A benchmark child's event-loop stalls, for the backend (`backendProcess.ts`)
 * and the raw `ws` floor (`rawBroadcast.ts`) alike:
 * - `maxMs`, `p99Ms`: the event-loop delay (`monitorEventLoopDelay`, 2 ms
 *   resolution), whatever caused it;
 * - `onCpuMs`: of the longest gap between two ticks of a 2 ms timer, how much
 *   the main thread spent on a CPU (Linux `/proc/thread-self/schedstat`, in
 *   ns; elsewhere `process.cpuUsage`, every thread). On this 2-core machine
 *   the load generator runs beside the server, so a stall is partly the
 *   thread waiting for a core: this says how much of it was its own work;
 * - `longestOnCpuMs`: the most CPU time the main thread used in any one gap,
 *   the longest stretch of its own work between two timer ticks;
 * - `gcMaxMs`: the longest garbage-collection pause (`PerformanceObserver`);
 * - `cpuMs`: CPU time since `reset`.
 */
import fs from "node:fs";
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";

export type LoopStall = {
  maxMs: number;
  p99Ms: number;
  onCpuMs: number;
  longestOnCpuMs: number;
  gcMaxMs: number;
  cpuMs: number;
};

const TICK_MS = 2;

export class LoopMonitor {
  readonly #delay = monitorEventLoopDelay({ resolution: TICK_MS });
  #cpuAtReset = process.cpuUsage();
  #lastTick = performance.now();
  #lastCpuMs = mainThreadCpuMs();
  #longestGapMs = 0;
  #longestGapCpuMs = 0;
  #longestOnCpuMs = 0;
  #gcMaxMs = 0;

  constructor() {
    this.#delay.enable();
    setInterval(() => this.#tick(), TICK_MS).unref();
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries())
        this.#gcMaxMs = Math.max(this.#gcMaxMs, entry.duration);
    }).observe({ entryTypes: ["gc"] });
  }

  reset(): void {
    this.#delay.reset();
    this.#cpuAtReset = process.cpuUsage();
    this.#longestGapMs = 0;
    this.#longestGapCpuMs = 0;
    this.#longestOnCpuMs = 0;
    this.#gcMaxMs = 0;
  }

  stall(): LoopStall {
    return {
      maxMs: this.#delay.max / 1e6,
      p99Ms: this.#delay.percentile(99) / 1e6,
      onCpuMs: this.#longestGapCpuMs,
      longestOnCpuMs: this.#longestOnCpuMs,
      gcMaxMs: this.#gcMaxMs,
      cpuMs: cpuMs(process.cpuUsage(this.#cpuAtReset)),
    };
  }

  #tick(): void {
    const now = performance.now();
    const cpu = mainThreadCpuMs();
    const gapMs = now - this.#lastTick;
    // With the fallback (every thread) CPU time may exceed the gap.
    const onCpuMs = Math.min(gapMs, cpu - this.#lastCpuMs);
    this.#lastTick = now;
    this.#lastCpuMs = cpu;
    if (gapMs > this.#longestGapMs) {
      this.#longestGapMs = gapMs;
      this.#longestGapCpuMs = onCpuMs;
    }
    if (onCpuMs > this.#longestOnCpuMs) this.#longestOnCpuMs = onCpuMs;
  }
}

/** The main thread's own schedstat: opened here, it names this thread. */
const schedstat = (() => {
  try {
    return fs.openSync("/proc/thread-self/schedstat", "r");
  } catch {
    return null;
  }
})();
const schedstatBuffer = Buffer.alloc(64);

/** CPU time of the calling (main) thread, ms; every thread's where /proc is missing. */
function mainThreadCpuMs(): number {
  if (schedstat === null) return cpuMs(process.cpuUsage());
  const length = fs.readSync(schedstat, schedstatBuffer, 0, 64, 0);
  const ns = schedstatBuffer.toString("latin1", 0, length).split(" ")[0];
  return Number(ns) / 1e6;
}

function cpuMs({ user, system }: NodeJS.CpuUsage): number {
  return (user + system) / 1000;
}
