/**
 * TimedRealm's windows, on a context built here with a stub host whose async
 * syscall answers synchronously after a busy wait (as the database does): how
 * often a run lets the event loop turn. Another client's request needs a few
 * turns, so this is what a long query costs everyone else.
 */
import v8 from "node:v8";
import vm from "node:vm";
import { describe, expect, test } from "vitest";
import { TurnCounter } from "../../test/turnCounter.ts";
import type { ConvexGlobal } from "./syscalls.ts";
import {
  HostCodeCut,
  type RunHandle,
  TimedRealm,
  USER_TIMEOUT_MS,
} from "./deadline.ts";

type Modules = { loop(syscalls: number): Promise<string> };

function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/** A realm whose one function, `loop`, awaits `syscalls` async syscalls of `convex`. */
function loopRealm(convex: ConvexGlobal): TimedRealm<Modules> {
  return new TimedRealm<Modules>((hooks) => {
    const context = vm.createContext(
      { Convex: hooks.wrapConvex(convex) },
      { microtaskMode: "afterEvaluate" },
    );
    hooks.installEntry(context);
    vm.runInContext(hooks.prelude, context);
    const modules = vm.runInContext(
      `({
        loop: async (syscalls) => {
          for (let i = 0; i < syscalls; i++) await Convex.asyncSyscall("op", "{}");
          return "done";
        },
      })`,
      context,
    ) as Modules;
    return { context, modules };
  });
}

/** `loopRealm` with async syscalls that answer synchronously after `syscallMs` of busy wait. */
function realm(syscallMs: number): TimedRealm<Modules> {
  return loopRealm({
    syscall: () => "null",
    jsSyscall: () => null,
    asyncSyscall: () => Promise.resolve("null"),
    asyncSyscallNow: () => {
      busyWait(syscallMs);
      return "null";
    },
  });
}

/** Runs the loop and counts the event-loop turns (setImmediate ticks) meanwhile. */
async function turnsDuring(
  syscalls: number,
  syscallMs: number,
): Promise<number> {
  const timed = realm(syscallMs);
  const turns = new TurnCounter();
  const result = await timed.invoke(USER_TIMEOUT_MS, (modules) =>
    modules.loop(syscalls),
  );
  turns.stop();
  expect(result).toBe("done");
  return turns.count;
}

describe("windows of a run that awaits the database", () => {
  test("a short run keeps several syscalls in one window", async () => {
    // 40 syscalls of 0.25 ms (10 ms in all, half of LONG_RUN_AFTER_MS): a
    // window ends at the first syscall past 5 ms, so about 2 turns, a few
    // more on a loaded machine (windows are wall-clock); a window per
    // syscall would be 40.
    expect(await turnsDuring(40, 0.25)).toBeLessThanOrEqual(20);
  });

  test("once a run has held the thread 20 ms, the event loop turns at every syscall past a millisecond", async () => {
    // 100 syscalls of 2 ms: at most 10 fit in the first 20 ms; each later one
    // ends its window (with 5 ms windows it would be every third).
    expect(await turnsDuring(100, 2)).toBeGreaterThanOrEqual(89);
  });
});

describe("stopping a run whose caller lost it", () => {
  /** `loopRealm` whose async syscalls settle when the test says (`held`). */
  function heldRealm() {
    const held: (() => void)[] = [];
    const realm = loopRealm({
      syscall: () => "null",
      jsSyscall: () => null,
      asyncSyscall: () =>
        new Promise<string>((resolve) => held.push(() => resolve("null"))),
    });
    return { realm, held };
  }

  test("a stopped run that is going fails with HostCodeCut and gives its context back", async () => {
    const { realm, held } = heldRealm();
    const handle: RunHandle = { run: null };
    const result = realm.invokeNow(
      USER_TIMEOUT_MS,
      (modules) => modules.loop(1),
      handle,
    );
    expect(result).toBeInstanceOf(Promise);
    expect(realm.contextsHeld).toBe(1);
    realm.stop(handle);
    await expect(result).rejects.toBeInstanceOf(HostCodeCut);
    expect(realm.contextsHeld).toBe(0);
    // Its syscall settling later reaches nothing.
    held.shift()!();
    await new Promise(setImmediate);
    expect(realm.contextsHeld).toBe(0);
  });

  test("a stopped run still waiting for a context never starts, and the context goes to the next one", async () => {
    const { realm, held } = heldRealm();
    // Every context leased by a run awaiting its syscall.
    const leasing = Array.from({ length: 8 }, () =>
      realm.invoke(USER_TIMEOUT_MS, (modules) => modules.loop(1)),
    );
    expect(realm.contextsHeld).toBe(8);
    let started = 0;
    const handle: RunHandle = { run: null };
    const waiting = realm.invokeNow(
      USER_TIMEOUT_MS,
      (modules) => {
        started++;
        return modules.loop(0);
      },
      handle,
    ) as Promise<string>;
    const next = realm.invoke(USER_TIMEOUT_MS, (modules) => modules.loop(0));
    realm.stop(handle);
    expect(handle.run).toBeNull();
    // One run ends: its context passes over the stopped run to the next.
    held.shift()!();
    await expect(waiting).rejects.toBeInstanceOf(HostCodeCut);
    expect(await next).toBe("done");
    expect(started).toBe(0);
    for (const release of held.splice(0)) release();
    expect(await Promise.all(leasing)).toEqual(Array(8).fill("done"));
    expect(realm.contextsHeld).toBe(0);
  });
});

describe("a stopped run that awaits Web Crypto", () => {
  test("its context is collected, also when the continuation its last drain runs calls Web Crypto again", async () => {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as () => void;
    const held: (() => void)[] = [];
    const marks: string[] = [];
    const contexts: WeakRef<object>[] = [];
    const realm = new TimedRealm<{ run(): Promise<string> }>((hooks) => {
      const context = vm.createContext(
        {
          Convex: hooks.wrapConvex({
            syscall: () => "null",
            jsSyscall: () => null,
            asyncSyscall: () => Promise.resolve("null"),
          }),
          mark: (m: string) => marks.push(m),
          // A host `sign` that settles when the test says.
          crypto: {
            subtle: {
              sign: () =>
                new Promise<ArrayBuffer>((resolve) =>
                  held.push(() => resolve(new ArrayBuffer(1))),
                ),
            },
          },
        },
        { microtaskMode: "afterEvaluate" },
      );
      contexts.push(new WeakRef(context));
      hooks.installEntry(context);
      vm.runInContext(hooks.prelude, context);
      const modules = vm.runInContext(
        `({
          run: async () => {
            await crypto.subtle.sign();
            mark("after first");
            await crypto.subtle.sign();
            mark("after second");
            return "done";
          },
        })`,
        context,
      ) as { run(): Promise<string> };
      return { context, modules };
    });
    const turns = async (n: number) => {
      for (let i = 0; i < n; i++) await new Promise(setImmediate);
    };
    const handle: RunHandle = { run: null };
    const result = realm.invokeNow(
      USER_TIMEOUT_MS,
      (modules) => modules.run(),
      handle,
    ) as Promise<string>;
    realm.stop(handle);
    await expect(result).rejects.toBeInstanceOf(HostCodeCut);
    handle.run = null;
    // The first signature settles: the last drain runs the continuation,
    // which signs again; that one settles after the drain.
    held.shift()!();
    await turns(5);
    expect(marks).toEqual(["after first"]);
    for (const release of held.splice(0)) release();
    await turns(5);
    for (let i = 0; i < 10; i++) {
      gc();
      await turns(2);
    }
    // Before: the second signature's reaction, queued in the dropped
    // context's queue, kept the context alive for good.
    expect(contexts[0].deref()).toBeUndefined();
    expect(marks).toEqual(["after first"]);
  });
});
