// Starts a worker thread from the TypeScript sources: the module named by the
// worker's first argument (`argv`), relative to this folder (nodeWorker.ts,
// isolateWorker.ts). The backend runs through tsx, and under vitest, neither
// of which registers its loader in a new worker thread, so the worker
// registers tsx itself.
import { register } from "tsx/esm/api";

register();
await import(new URL(process.argv[2], import.meta.url).href);
