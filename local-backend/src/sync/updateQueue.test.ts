/**
 * The fan-out queue: first in first out, urgent items first, each item at
 * most once, and removed items never come out; heavy items after the light
 * ones unless they waited long, and only when the caller allows them.
 */
import { describe, expect, test, vi } from "vitest";
import { HEAVY_MAX_WAIT_MS, UpdateQueue } from "./updateQueue.ts";

function drain<T>(queue: UpdateQueue<T>): T[] {
  const out: T[] = [];
  for (let item = queue.take(); item !== undefined; item = queue.take())
    out.push(item);
  return out;
}

describe("UpdateQueue", () => {
  test("urgent items come first, each group in arrival order, each item once", () => {
    const queue = new UpdateQueue<string>();
    queue.add("a", false);
    queue.add("b", false);
    queue.add("a", false);
    queue.add("c", true);
    queue.add("d", false);
    // Moved up: leaves its place among the others.
    queue.add("b", true);
    // Already urgent: stays urgent.
    queue.add("c", false);
    expect(queue.size).toBe(4);
    expect(drain(queue)).toEqual(["c", "b", "a", "d"]);
    expect(queue.size).toBe(0);
  });

  test("a removed item never comes out, and may be queued again later at the back", () => {
    const queue = new UpdateQueue<number>();
    for (let i = 0; i < 5; i++) queue.add(i, false);
    queue.remove(1);
    queue.remove(3);
    expect(queue.take()).toBe(0);
    queue.add(1, false);
    expect(drain(queue)).toEqual([2, 4, 1]);
  });

  test("a long run of takes and adds keeps the order (the list is compacted as its head moves)", () => {
    const queue = new UpdateQueue<number>();
    const taken: number[] = [];
    for (let i = 0; i < 5_000; i++) {
      queue.add(i, false);
      if (i % 3 === 0) taken.push(queue.take()!);
    }
    taken.push(...drain(queue));
    expect(taken).toEqual(Array.from({ length: 5_000 }, (_, i) => i));
  });

  test("heavy items wait behind light ones, come out only when allowed, and go first once they waited long", () => {
    vi.useFakeTimers({ toFake: ["performance"] });
    try {
      const queue = new UpdateQueue<string>();
      queue.add("heavy1", false, true);
      queue.add("light1", false);
      queue.add("heavy2", false, true);
      // Urgent requests ignore weight: a socket's own requests go first.
      queue.add("urgentHeavy", true, true);
      queue.add("light2", false);
      expect(queue.take(false)).toBe("urgentHeavy");
      expect(queue.take(false)).toBe("light1");
      expect(queue.take(false)).toBe("light2");
      // Only heavy ones wait: none while they are not allowed.
      expect(queue.take(false)).toBeUndefined();
      expect(queue.size).toBe(2);
      queue.add("light3", false);
      expect(queue.take()).toBe("light3");
      expect(queue.take()).toBe("heavy1");
      // A heavy one that waited HEAVY_MAX_WAIT_MS goes before light ones.
      vi.advanceTimersByTime(HEAVY_MAX_WAIT_MS);
      queue.add("light4", false);
      expect(queue.take()).toBe("heavy2");
      expect(drain(queue)).toEqual(["light4"]);
    } finally {
      vi.useRealTimers();
    }
  });
});
