/**
 * Memory a subscription holds in the backend (`npm run bench -- --only=memory`):
 * one socket adds 20,000 queries, each a query of its own (`items:range`
 * with distinct arguments, an empty result each) or all the same one
 * (`items:all`, an empty result shared by all); once the socket has its
 * first Transition, the backend's heap (V8's in use plus external memory,
 * after two full collections, `backendProcess.ts` `heap`) against its heap
 * before, per subscription.
 *
 * Beside each, measured in the same run: the heap that holding the very same
 * query set takes in a bare `Map` (query id -> the parsed `Add`, as the
 * frame carried it), the least any server that keeps a query set holds, and
 * the bytes of the `Add`s in the frame.
 *
 * Usage: `npm run bench -- --only=memory [--quick]` (5,000 subscriptions).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import { type Child, startChild, syncPeer } from "./fanout.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const FIXTURE = path.join(ROOT, "local-backend/test/fixture/convex");

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

export type MemoryCase = {
  name: string;
  subscriptions: number;
  /** The backend's heap growth per subscription. */
  backendBytesPerSubscription: number;
  /** A bare Map holding the same query set, per subscription (the floor). */
  floorBytesPerSubscription: number;
  /** The `Add`'s JSON in the frame, per subscription. */
  frameBytesPerSubscription: number;
};

type Add = {
  type: "Add";
  queryId: number;
  udfPath: string;
  args: unknown[];
};

function heapNow(): number {
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.external;
}

/** The heap a bare Map of the parsed `Add`s takes, per query. */
function floorBytes(frame: string, count: number): number {
  const before = heapNow();
  const message = JSON.parse(frame) as { modifications: Add[] };
  const held = new Map<number, Add>();
  for (const add of message.modifications) held.set(add.queryId, add);
  message.modifications = [];
  const after = heapNow();
  if (held.size !== count) throw new Error("the floor lost queries");
  return (after - before) / count;
}

async function memoryCase(
  backend: Child,
  name: string,
  count: number,
  add: (queryId: number) => Add,
): Promise<MemoryCase> {
  const peer = await syncPeer(backend.url, []);
  const frame = JSON.stringify({
    type: "ModifyQuerySet",
    baseVersion: 0,
    newVersion: 1,
    modifications: Array.from({ length: count }, (_, i) => add(i)),
  });
  const before = (await backend.request<{ bytes: number }>("heap")).bytes;
  const first = peer.expect('"Transition"');
  peer.ws.send(frame);
  await first;
  const after = (await backend.request<{ bytes: number }>("heap")).bytes;
  peer.close();
  const addsBytes = Buffer.byteLength(frame) - '{"modifications":[]}'.length;
  return {
    name,
    subscriptions: count,
    backendBytesPerSubscription: Math.round((after - before) / count),
    floorBytesPerSubscription: Math.round(floorBytes(frame, count)),
    frameBytesPerSubscription: Math.round(addsBytes / count),
  };
}

export async function subscriptionMemoryBenchmarks(options: {
  quick: boolean;
}): Promise<MemoryCase[]> {
  const count = options.quick ? 5_000 : 20_000;
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-memory-"));
  const cases: MemoryCase[] = [];
  // A backend of its own per case: the first case's queries stay out of the second's heap.
  for (const [name, add] of [
    [
      `${count.toLocaleString("en-US")} distinct queries on one socket (items:range, empty results)`,
      (queryId: number): Add => ({
        type: "Add",
        queryId,
        udfPath: "items:range",
        args: [{ group: "memory", above: -1 - queryId }],
      }),
    ],
    [
      `${count.toLocaleString("en-US")} identical queries on one socket (items:all, one empty result)`,
      (queryId: number): Add => ({
        type: "Add",
        queryId,
        udfPath: "items:all",
        args: [{}],
      }),
    ],
  ] as const) {
    const dir = fs.mkdtempSync(path.join(data, "case-"));
    const backend = await startChild("backendProcess.ts", [FIXTURE, dir]);
    try {
      cases.push(await memoryCase(backend, name, count, add));
    } finally {
      await backend.stop();
    }
  }
  fs.rmSync(data, { recursive: true, force: true });
  console.log(
    "\nsubscription memory (heap after two full GCs, per subscription)",
  );
  for (const c of cases)
    console.log(
      `  ${c.name}: backend ${c.backendBytesPerSubscription} B; floor (a bare Map of the parsed Adds) ${c.floorBytesPerSubscription} B, ${(c.backendBytesPerSubscription / c.floorBytesPerSubscription).toFixed(1)}x; the Add in the frame ${c.frameBytesPerSubscription} B`,
    );
  console.log(`\nJSON:\n${JSON.stringify({ memory: cases }, null, 2)}`);
  return cases;
}
