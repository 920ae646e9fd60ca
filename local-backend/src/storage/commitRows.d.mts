// Types of commitRows.mjs (plain JavaScript, loaded by the group writer's thread without tsx).
import type Database from "better-sqlite3";

/** A row set's keys: Buffers on the store's connection, latin1 strings on their way to the writer's thread. */
export type RowBatch<Key> = {
  ts: bigint;
  newTables: { name: string; number: number; count: number }[];
  newIndexes: {
    indexId: number;
    tableNumber: number;
    name: string;
    keyFields: string[];
    state: string;
  }[];
  writes: { id: string; tableNumber: number; json: string | null }[];
  indexWrites: {
    indexId: number;
    docId: string;
    remove: Key | null;
    add: Key | null;
  }[];
  sessionRequest?:
    { sessionId: string; requestId: number; outcome: string } | undefined;
};

/** What a group's commits leave in `tables.count` and the clocks: the last value of each. */
export type GroupState = {
  ts: bigint;
  lastCreationTime: number;
  counts: Map<number, number>;
};

export type CommitRows = {
  insertIndexRow(index: RowBatch<Buffer>["newIndexes"][number]): void;
  insertEntry(indexId: number, key: Buffer, docId: string): void;
  setMeta(key: string, value: string): void;
  write(batch: RowBatch<Buffer>): void;
  write<Key>(batch: RowBatch<Key>, keyOf: (key: Key) => Buffer): void;
  /** Also deletes up to `pruneBatch` expired session requests, at most once per `pruneIntervalNs` when none are left. */
  writeGroupState(group: GroupState): void;
};

export function commitRows(
  db: Database.Database,
  options: { retentionNs: bigint; pruneBatch: number; pruneIntervalNs: bigint },
): CommitRows;
