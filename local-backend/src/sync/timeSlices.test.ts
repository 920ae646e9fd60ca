/**
 * Time slices: work that shares one budget gives the event loop back between
 * slices, whichever loop it runs in, and work arriving after idle starts at
 * once; work paused between turns goes on a slice's worth at a time.
 */
import fs from "node:fs";
import net from "node:net";
import { MessageChannel } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { afterEach, describe, expect, test, vi } from "vitest";
import { TurnCounter } from "../../test/turnCounter.ts";
import { TimeSlices } from "./timeSlices.ts";

/** Holds the thread for `ms`, as a socket write or a query run would. */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

/** Runs `items` one-millisecond items through `slices`. */
async function worker(
  slices: TimeSlices,
  items: number,
  done: () => void,
): Promise<void> {
  let left = items;
  while (left > 0) {
    if (!slices.open()) {
      await slices.next();
      continue;
    }
    busy(1);
    done();
    left--;
  }
}

describe("TimeSlices", () => {
  test("two loops sharing the slices both stop when a slice runs out, so a macrotask runs in between", async () => {
    const slices = new TimeSlices(8);
    let done = 0;
    let doneWhenTheLoopRan = -1;
    setImmediate(() => (doneWhenTheLoopRan = done));
    await Promise.all([
      worker(slices, 40, () => done++),
      worker(slices, 40, () => done++),
    ]);
    expect(done).toBe(80);
    expect(doneWhenTheLoopRan).toBeGreaterThan(0);
    // One slice's worth for both loops together, not one per loop.
    expect(doneWhenTheLoopRan).toBeLessThan(16);
  });

  test("a slice that starts in an I/O callback is followed by a turn of the event loop's timers and I/O before the next", async () => {
    const slices = new TimeSlices(8);
    let done = 0;
    let doneWhenATimerRan = -1;
    await new Promise<void>((resolve, reject) =>
      // fs callbacks run in the event loop's poll phase, as a socket's frame
      // or a finished fsync does; a slice started there used to run into a
      // second one in the same turn's check phase, before any timer.
      fs.stat(import.meta.filename, (error) => {
        if (error !== null) return reject(error);
        setTimeout(() => (doneWhenATimerRan = done), 0);
        void worker(slices, 40, () => done++).then(resolve, reject);
      }),
    );
    expect(done).toBe(40);
    expect(doneWhenATimerRan).toBeGreaterThan(0);
    // One slice's worth (8 items and the one that crossed the deadline), not two.
    expect(doneWhenATimerRan).toBeLessThanOrEqual(9);
  });

  test("work after idle starts in the same task", async () => {
    const slices = new TimeSlices(8);
    await worker(slices, 20, () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(slices.open()).toBe(true);
  });

  test("runs paused in the same turn go on a slice's worth at a time, not all in the next turn", async () => {
    const slices = new TimeSlices(8);
    const turns = new TurnCounter();
    const perTurn = new Map<number, number>();
    // Six runs, each pausing five times; each step holds the thread 3 ms.
    const run = () =>
      new Promise<void>((resolve) => {
        let steps = 5;
        const step = () => {
          perTurn.set(turns.count, (perTurn.get(turns.count) ?? 0) + 1);
          busy(3);
          if (--steps === 0) resolve();
          else slices.later(step);
        };
        slices.later(step);
      });
    await Promise.all(Array.from({ length: 6 }, run));
    turns.stop();
    expect([...perTurn.values()].reduce((a, b) => a + b)).toBe(30);
    // An 8 ms slice holds three 3 ms steps: the third crosses its deadline.
    // With a plain setImmediate each, all six went on in every turn.
    expect(Math.max(...perTurn.values())).toBeLessThanOrEqual(3);
  });

  describe("a slice ended early", () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    /** Resolves with true once `promise` settles, false if `turns` check phases pass first. */
    async function settlesWithin(
      promise: Promise<void>,
      turns: number,
    ): Promise<boolean> {
      let settled = false;
      void promise.then(() => (settled = true));
      for (let i = 0; i < turns && !settled; i++)
        await new Promise((resolve) => setImmediate(resolve));
      return settled;
    }

    test("gives way to the next slice after one poll of I/O, not at the slice's timer", async () => {
      // Only the timers are held: the slice's own timer (1 ms steps) never
      // fires here, so a turn that waited for it would never end.
      vi.useFakeTimers({ toFake: ["setTimeout"] });
      const slices = new TimeSlices(8);
      expect(slices.open()).toBe(true);
      slices.end();
      expect(slices.open()).toBe(false);
      // What a poll hands over meanwhile (a finished fsync's answer) starts
      // the next slice as soon as the turn ends.
      let polled = false;
      fs.stat(import.meta.filename, () => (polled = true));
      // The poll of I/O comes first: the fs callback may need a few turns.
      while (!polled) await new Promise((resolve) => setImmediate(resolve));
      expect(await settlesWithin(slices.next(), 3)).toBe(true);
      expect(slices.open()).toBe(true);
    });

    test("is still followed by a poll before the next slice when ended in an I/O callback", async () => {
      const slices = new TimeSlices(8);
      // A socket's data is handled in the poll phase, as a client's frame
      // is; a message posted to a port there is taken at the next poll.
      const server = net.createServer((socket) => socket.end("frame"));
      await new Promise<void>((resolve) =>
        server.listen(0, "127.0.0.1", resolve),
      );
      const { port } = server.address() as net.AddressInfo;
      const { port1, port2 } = new MessageChannel();
      let polled = false;
      port1.on("message", () => (polled = true));
      let polledBeforeTheTurnEnded: boolean | null = null;
      try {
        await new Promise<void>((resolve, reject) => {
          const socket = net.connect(port, "127.0.0.1");
          socket.on("error", reject);
          socket.once("data", () => {
            expect(slices.open()).toBe(true);
            slices.end();
            port2.postMessage("poll");
            void slices.next().then(() => {
              polledBeforeTheTurnEnded = polled;
              socket.destroy();
              resolve();
            });
          });
        });
      } finally {
        port1.close();
        server.close();
      }
      // Not in the check phase right after the callback that ended it
      // (one immediate would be): the next slice starts after a poll.
      expect(polledBeforeTheTurnEnded).toBe(true);
    });
  });
});
