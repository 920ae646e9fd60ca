/**
 * What a query read, precisely enough to tell whether a commit can change its
 * result: the index intervals it scanned, the documents it fetched by ID, and
 * the tables it counted.
 *
 * The real backend keeps read sets as index-key intervals and invalidates only
 * subscriptions whose intervals contain a written key (convex-backend
 * `database/src/subscription.rs`); this is the same idea. It matters for
 * pagination: a chat's first page covers the newest messages, its older pages
 * cover fixed key ranges, so a new message re-runs the first page only.
 *
 * A scan's interval grows as the query consumes it (`ScanRecord.lastKey`), so a
 * `take(10)` covers ten rows, not the whole index, and a read set is complete
 * whenever the query stops, whether or not it drained its streams.
 *
 * Usage:
 *   const record = readSet.addScan("messages", keyFields, range, "desc", after);
 *   record.lastKey = key;   // for each row handed to the query
 *   readSet.overlaps(commit.changes)
 */
import {
  compareKeys,
  type IndexKey,
  indexKey,
  type KeyRange,
  keyInRange,
  type Order,
} from "./indexRange.ts";
import type { Doc } from "../values/wire.ts";

/** One document written by a commit: its value before and after (null = absent). */
export type DocumentChange = {
  table: string;
  id: string;
  before: Doc | null;
  after: Doc | null;
};

/** The part of one index a scan has read so far. */
export type ScanRecord = {
  table: string;
  keyFields: string[];
  range: KeyRange;
  order: Order;
  /** The scan started strictly after this key (a pagination cursor). */
  after: IndexKey | undefined;
  /** The last key handed to the query; undefined until the first row. */
  lastKey: IndexKey | undefined;
  /** True once the scan reached the end of its range. */
  done: boolean;
};

/** A read of the documents of `table` that `matches` accepts (a text search). */
export type ReadPredicate = { table: string; matches: (doc: Doc) => boolean };

export class ReadSet {
  /** Every table read in any way; a cheap first filter. */
  readonly tables = new Set<string>();
  readonly #scans: ScanRecord[] = [];
  readonly #ids = new Set<string>();
  readonly #wholeTables = new Set<string>();
  readonly #predicates: ReadPredicate[] = [];

  addScan(
    table: string,
    keyFields: string[],
    range: KeyRange,
    order: Order,
    after: IndexKey | undefined,
  ): ScanRecord {
    const record: ScanRecord = {
      table,
      keyFields,
      range,
      order,
      after,
      lastKey: undefined,
      done: false,
    };
    this.tables.add(table);
    this.#scans.push(record);
    return record;
  }

  /** A document fetched by ID (found or not). */
  addId(table: string, id: string): void {
    this.tables.add(table);
    this.#ids.add(id);
  }

  /** A read that depends on every document of a table (`count()`). */
  addTable(table: string): void {
    this.tables.add(table);
    this.#wholeTables.add(table);
  }

  /** The index scans, in the order they started (`query/readSetIndex.ts` indexes them). */
  get scans(): readonly ScanRecord[] {
    return this.#scans;
  }

  /** The IDs fetched with `db.get`. */
  get ids(): ReadonlySet<string> {
    return this.#ids;
  }

  /** The tables read whole (`count()`). */
  get wholeTables(): ReadonlySet<string> {
    return this.#wholeTables;
  }

  /** The predicate reads (`query/readSetIndex.ts` checks them per table). */
  get predicates(): readonly ReadPredicate[] {
    return this.#predicates;
  }

  /**
   * A read that depends on the documents of a table a predicate accepts (a
   * text search: its filter values and query terms, textSearch.ts).
   */
  addPredicate(table: string, matches: (doc: Doc) => boolean): void {
    this.tables.add(table);
    this.#predicates.push({ table, matches });
  }

  /** Whether any of these writes can change what was read. */
  overlaps(changes: readonly DocumentChange[]): boolean {
    for (const change of changes) {
      if (!this.tables.has(change.table)) continue;
      if (this.#wholeTables.has(change.table) || this.#ids.has(change.id))
        return true;
      for (const scan of this.#scans) {
        if (scan.table !== change.table) continue;
        if (scanCovers(scan, change.before) || scanCovers(scan, change.after))
          return true;
      }
      for (const { table, matches } of this.#predicates) {
        if (table !== change.table) continue;
        if (
          (change.before !== null && matches(change.before)) ||
          (change.after !== null && matches(change.after))
        )
          return true;
      }
    }
    return false;
  }
}

function scanCovers(scan: ScanRecord, doc: Doc | null): boolean {
  if (doc === null) return false;
  if (scan.lastKey === undefined && !scan.done) return false;
  const key = indexKey(doc, scan.keyFields);
  if (!keyInRange(key, scan.range)) return false;
  const forward = scan.order === "asc" ? 1 : -1;
  // Strictly after the starting cursor, in scan order...
  if (scan.after !== undefined && forward * compareKeys(key, scan.after) <= 0)
    return false;
  // ...and, unless the scan ran to the end, no further than its last row.
  if (
    !scan.done &&
    scan.lastKey !== undefined &&
    forward * compareKeys(key, scan.lastKey) > 0
  )
    return false;
  return true;
}
