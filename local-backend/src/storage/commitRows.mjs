// The rows a commit writes, and what a group of commits writes once at its
// COMMIT: shared by the store's own connection (sqliteStore.ts, a group that
// also keeps search indexes) and the group writer's thread
// (groupWriterWorker.mjs, every other group), so both write the same rows.
//
// Plain JavaScript, as walCheckpointWorker.mjs: the writer's thread loads it
// without tsx (neither tsx nor vitest registers its loader in a new worker
// thread). Its types are in commitRows.d.mts.
//
// Usage:
//   const rows = commitRows(db, { retentionNs, pruneBatch, pruneIntervalNs });
//   rows.write(batch);              // inside the group's transaction
//   rows.writeGroupState(state);    // just before its COMMIT

/** @param {import("better-sqlite3").Database} db */
export function commitRows(db, { retentionNs, pruneBatch, pruneIntervalNs }) {
  const setMeta = db.prepare(
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
  );
  const insertTable = db.prepare(
    "INSERT INTO tables (name, number, count) VALUES (?, ?, ?)",
  );
  const setCount = db.prepare("UPDATE tables SET count = ? WHERE number = ?");
  const insertIndex = db.prepare(
    "INSERT INTO indexes (index_id, table_number, name, fields, state) VALUES (?, ?, ?, ?, ?)",
  );
  const upsertDocument = db.prepare(
    "INSERT INTO documents (id, table_number, ts, json) VALUES (?, ?, ?, ?) " +
      "ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, json = excluded.json",
  );
  const deleteDocument = db.prepare("DELETE FROM documents WHERE id = ?");
  // OR REPLACE: a backfill may have written the same entry already.
  const insertEntry = db.prepare(
    "INSERT OR REPLACE INTO index_entries (index_id, key, doc_id) VALUES (?, ?, ?)",
  );
  const deleteEntry = db.prepare(
    "DELETE FROM index_entries WHERE index_id = ? AND key = ?",
  );
  const insertSessionRequest = db.prepare(
    "INSERT OR REPLACE INTO session_requests (session_id, request_id, ts, outcome) VALUES (?, ?, ?, ?)",
  );
  // The oldest first, through `session_requests_by_ts`: it reads only what it deletes.
  const pruneSessionRequests = db.prepare(
    "DELETE FROM session_requests WHERE (session_id, request_id) IN " +
      "(SELECT session_id, request_id FROM session_requests WHERE ts < ? ORDER BY ts LIMIT ?)",
  );
  // The group commit timestamp from which expired session requests are looked for again.
  let nextPruneTs = 0n;

  const insertIndexRow = (index) =>
    insertIndex.run(
      index.indexId,
      index.tableNumber,
      index.name,
      JSON.stringify(index.keyFields),
      index.state,
    );

  return {
    insertIndexRow,
    insertEntry: (indexId, key, docId) => insertEntry.run(indexId, key, docId),
    setMeta: (key, value) => setMeta.run(key, value),
    write(batch, keyOf = (key) => key) {
      for (const table of batch.newTables) {
        insertTable.run(table.name, table.number, table.count);
      }
      for (const index of batch.newIndexes) insertIndexRow(index);
      for (const write of batch.writes) {
        if (write.json === null) deleteDocument.run(write.id);
        else
          upsertDocument.run(write.id, write.tableNumber, batch.ts, write.json);
      }
      for (const write of batch.indexWrites) {
        if (write.remove !== null)
          deleteEntry.run(write.indexId, keyOf(write.remove));
        if (write.add !== null)
          insertEntry.run(write.indexId, keyOf(write.add), write.docId);
      }
      if (batch.sessionRequest !== undefined) {
        const { sessionId, requestId, outcome } = batch.sessionRequest;
        insertSessionRequest.run(sessionId, requestId, batch.ts, outcome);
      }
    },
    writeGroupState(group) {
      for (const [number, count] of group.counts) setCount.run(count, number);
      setMeta.run("last_ts", group.ts.toString());
      setMeta.run("last_creation_time", String(group.lastCreationTime));
      if (group.ts >= nextPruneTs) {
        const { changes } = pruneSessionRequests.run(
          group.ts - retentionNs,
          pruneBatch,
        );
        nextPruneTs = changes < pruneBatch ? group.ts + pruneIntervalNs : 0n;
      }
    },
  };
}
