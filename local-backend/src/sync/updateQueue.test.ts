/**
 * The fan-out queue: first in first out, urgent items first, each item at
 * most once, and removed items never come out.
 */
import { describe, expect, test } from "vitest";
import { UpdateQueue } from "./updateQueue.ts";

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
});
