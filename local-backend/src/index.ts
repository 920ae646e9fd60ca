/**
 * The embedded Convex-compatible backend, for code: tests, benchmarks and the
 * dev script start it with `startBackend({ port: 0, ... })`.
 */
export { startBackend, StartupError } from "./backend.ts";
export type { Backend, BackendLogger, BackendOptions } from "./backend.ts";
