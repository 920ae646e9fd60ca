// Starts a Node-runtime worker (nodeWorker.ts) from the TypeScript sources:
// the backend runs through tsx, and under vitest, neither of which registers
// its loader in a new worker thread, so the worker registers tsx itself.
import { register } from "tsx/esm/api";

register();
await import("./nodeWorker.ts");
