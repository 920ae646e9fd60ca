/**
 * Group commit through the real clients: mutations that arrive together share
 * one fsync, and nothing (an answer, a subscriber's Transition, an HTTP query)
 * reaches a client before the commit it reflects is on disk. The sync hook
 * stands in for the disk: it holds a group's fsync until the test lets it go.
 */
import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, test } from "vitest";
import type { SyncHook } from "../src/storage/database.ts";
import {
  api,
  type MutationResponse,
  RawSyncClient,
  startTestBackend,
  type TestBackend,
  waitFor,
} from "./helpers.ts";

let harness: TestBackend | null = null;
afterEach(async () => {
  await harness?.stop();
  harness = null;
});

/** A hook that holds each fsync until `open()`, recording when one has run. */
function heldDisk() {
  const events: string[] = [];
  let syncs = 0;
  let backlog = () => 0;
  let open: () => void = () => undefined;
  let opened = new Promise<void>((resolve) => (open = resolve));
  const hook: SyncHook = async (sync, pending) => {
    syncs++;
    backlog = pending;
    await opened;
    await sync();
    events.push("fsync");
  };
  return {
    hook,
    events,
    get syncs() {
      return syncs;
    },
    backlog: () => backlog(),
    open: () => open(),
    /** Holds the fsyncs that start from now on. */
    hold() {
      opened = new Promise<void>((resolve) => (open = resolve));
    },
  };
}

describe("group commit", () => {
  test("mutations from 50 clients that arrive together share one fsync; no answer or Transition comes before it, and a failing one changes nothing for the others", async () => {
    const disk = heldDisk();
    disk.open();
    harness = await startTestBackend({ syncHook: disk.hook });
    const watcher = harness.client();
    let seen = 0;
    watcher.onUpdate(api.messages.byAuthor, { author: "group" }, (rows) => {
      if (rows.length > seen) disk.events.push(`seen ${rows.length}`);
      seen = rows.length;
    });
    const reader = harness.httpClient();
    await reader.query(api.messages.byAuthor, { author: "group" });

    disk.hold();
    const syncsBefore = disk.syncs;
    const WRITERS = 50;
    const writes = Array.from({ length: WRITERS }, (_, i) => {
      const http = harness!.httpClient();
      // One of them writes and then fails: its write must not commit.
      return i === 25
        ? http
            .mutation(api.items.insertThenFail, {
              group: "group commit",
              data: "refused",
            })
            .then(
              () => "committed",
              () => "failed",
            )
        : http
            .mutation(api.messages.send, { author: "group", body: `w${i}` })
            .then(() => void disk.events.push("ack"));
    });
    await waitFor(
      () => disk.syncs > syncsBefore && disk.backlog() >= WRITERS - 1,
      "49 commits waiting for one fsync",
    );
    const query = reader
      .query(api.messages.byAuthor, { author: "group" })
      .then((rows) => {
        disk.events.push("query answered");
        return rows;
      });
    disk.open();
    const outcomes = await Promise.all(writes);
    await waitFor(() => seen === WRITERS - 1, "the watcher to see all 49");

    expect(disk.syncs - syncsBefore).toBe(1);
    expect(outcomes[25]).toBe("failed");
    expect(disk.events[0]).toBe("fsync");
    expect(disk.events.filter((e) => e === "ack")).toHaveLength(WRITERS - 1);
    expect(await query).toHaveLength(WRITERS - 1);
    expect(await reader.query(api.items.all, {})).not.toContainEqual(
      expect.objectContaining({ group: "group commit" }),
    );
  });

  test("a client that reconnects and resends a mutation whose group is not yet durable gets the one result once it is", async () => {
    const disk = heldDisk();
    disk.open();
    harness = await startTestBackend({ syncHook: disk.hook });
    const sessionId = randomUUID();
    const first = await RawSyncClient.open(harness.url);
    await first.connect(sessionId);
    const send = {
      type: "Mutation",
      requestId: 0,
      udfPath: "messages:send",
      args: [{ author: "once", body: "exactly once" }],
    };

    disk.hold();
    const syncsBefore = disk.syncs;
    await first.send(send);
    const others = Array.from({ length: 10 }, (_, i) =>
      harness!
        .httpClient()
        .mutation(api.messages.send, { author: "others", body: `o${i}` }),
    );
    await waitFor(
      () => disk.syncs > syncsBefore && disk.backlog() >= 11,
      "the mutation and ten others waiting for one fsync",
    );
    first.terminate();
    expect(first.messages.filter((m) => m.type === "MutationResponse")).toEqual(
      [],
    );

    const second = await harness.raw();
    await second.connect(sessionId);
    await second.send(send);
    disk.open();
    const answer: MutationResponse = await second.mutationResponse(0);
    await Promise.all(others);

    expect(answer.success).toBe(true);
    const rows = await harness
      .httpClient()
      .query(api.messages.byAuthor, { author: "once" });
    expect(rows.map((r) => r._id)).toEqual([answer.result]);
  });
});
