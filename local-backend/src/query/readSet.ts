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
 *   const record = readSet.addScan("messages", keyFields, interval, "desc");
 *   advance(record, key);   // the encoded key of each row handed to the query
 *   readSet.overlaps(commit.changes)
 */
import { indexKey } from "./indexRange.ts";
import {
  coveredInterval,
  encodeKey,
  intervalContains,
  isPast,
  type KeyInterval,
  type Order,
} from "./keys.ts";
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
  /** The keys the scan could read: its range, less what a cursor skipped. */
  interval: KeyInterval;
  order: Order;
  /** The encoded key of the last row handed to the query; undefined until the first. */
  lastKey: Buffer | undefined;
  /** True once the scan reached the end of its range. */
  done: boolean;
};

/** A read of the documents of `table` that `matches` accepts (a text search). */
export type ReadPredicate = { table: string; matches: (doc: Doc) => boolean };

/** What the getters give for a kind of read a read set has none of; never written to. */
const NO_STRINGS: ReadonlySet<string> = new Set();
const NO_PREDICATES: readonly ReadPredicate[] = [];
const NO_SCANS: readonly ScanRecord[] = [];

/**
 * Scans a read set looks through one by one for a repeated range before it
 * keeps a map of them: most queries make a few. A subscription keeps its
 * read set, and one of a distinct query with an empty result held 4.4 KB of
 * heap with the map and two empty sets made for every read set, 3.5 KB
 * without (20,000 of them on one socket, after a full GC).
 */
const SCANS_SEARCHED = 8;

export class ReadSet {
  /** Every table read in any way; a cheap first filter. */
  readonly tables = new Set<string>();
  /** Made at the first scan with just room for it (a `[]` pushed to holds 17). */
  #scans: ScanRecord[] | null = null;
  /**
   * Scans by what they read, so a loop re-running one query adds one
   * record: made once there are more than SCANS_SEARCHED. A subscription
   * keeps its read set, so what most read sets have none of is not made.
   */
  #scansByRange: Map<string, ScanRecord> | null = null;
  #ids: Set<string> | null = null;
  #wholeTables: Set<string> | null = null;
  #predicates: ReadPredicate[] | null = null;

  /**
   * The record of a scan of `interval`. The same range scanned again (a loop
   * over `.first()`) shares one record, whose `lastKey` only ever advances
   * (`advance`): it covers the union of what the scans read.
   */
  addScan(
    table: string,
    keyFields: string[],
    interval: KeyInterval,
    order: Order,
  ): ScanRecord {
    const existing = this.#findScan(table, keyFields, interval, order);
    if (existing !== undefined) return existing;
    const record: ScanRecord = {
      table,
      keyFields,
      interval,
      order,
      lastKey: undefined,
      done: false,
    };
    this.tables.add(table);
    if (this.#scans === null) this.#scans = [record];
    else this.#scans.push(record);
    if (this.#scansByRange !== null) {
      this.#scansByRange.set(rangeKey(record), record);
    } else if (this.#scans.length > SCANS_SEARCHED) {
      this.#scansByRange = new Map();
      for (const scan of this.#scans)
        this.#scansByRange.set(rangeKey(scan), scan);
    }
    return record;
  }

  #findScan(
    table: string,
    keyFields: string[],
    interval: KeyInterval,
    order: Order,
  ): ScanRecord | undefined {
    if (this.#scansByRange !== null)
      return this.#scansByRange.get(
        rangeKey({ table, keyFields, interval, order }),
      );
    return this.#scans?.find(
      (scan) =>
        scan.table === table &&
        scan.order === order &&
        scan.keyFields.length === keyFields.length &&
        scan.keyFields.every((field, i) => field === keyFields[i]) &&
        scan.interval.lo.equals(interval.lo) &&
        scan.interval.hi.equals(interval.hi),
    );
  }

  /** A document fetched by ID (found or not). */
  addId(table: string, id: string): void {
    this.tables.add(table);
    (this.#ids ??= new Set()).add(id);
  }

  /** A read that depends on every document of a table (`count()`). */
  addTable(table: string): void {
    this.tables.add(table);
    (this.#wholeTables ??= new Set()).add(table);
  }

  /** The index scans, in the order they started (`query/readSetIndex.ts` indexes them). */
  get scans(): readonly ScanRecord[] {
    return this.#scans ?? NO_SCANS;
  }

  /** The IDs fetched with `db.get`. */
  get ids(): ReadonlySet<string> {
    return this.#ids ?? NO_STRINGS;
  }

  /** The tables read whole (`count()`). */
  get wholeTables(): ReadonlySet<string> {
    return this.#wholeTables ?? NO_STRINGS;
  }

  /** The predicate reads (`query/readSetIndex.ts` checks them per table). */
  get predicates(): readonly ReadPredicate[] {
    return this.#predicates ?? NO_PREDICATES;
  }

  /**
   * A read that depends on the documents of a table a predicate accepts (a
   * text search: its filter values and query terms, textSearch.ts).
   */
  addPredicate(table: string, matches: (doc: Doc) => boolean): void {
    this.tables.add(table);
    (this.#predicates ??= []).push({ table, matches });
  }

  /** Whether any of these writes can change what was read. */
  overlaps(changes: readonly DocumentChange[]): boolean {
    for (const change of changes) {
      if (!this.tables.has(change.table)) continue;
      if (
        this.#wholeTables?.has(change.table) === true ||
        this.#ids?.has(change.id) === true
      )
        return true;
      for (const scan of this.#scans ?? NO_SCANS) {
        if (scan.table !== change.table) continue;
        if (scanCovers(scan, change.before) || scanCovers(scan, change.after))
          return true;
      }
      for (const { table, matches } of this.#predicates ?? NO_PREDICATES) {
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

/** What a scan read, as a string: the same for the same range only. */
function rangeKey({
  table,
  keyFields,
  interval,
  order,
}: Pick<ScanRecord, "table" | "keyFields" | "interval" | "order">): string {
  return `${table}\0${keyFields.join("\0")}\0${order}\0${interval.lo.toString("hex")}\0${interval.hi.toString("hex")}`;
}

/** A scan handed the query the row at `key`: its record covers up to there, at least. */
export function advance(scan: ScanRecord, key: Buffer): void {
  if (scan.lastKey === undefined || isPast(scan.order, key, scan.lastKey))
    scan.lastKey = key;
}

function scanCovers(scan: ScanRecord, doc: Doc | null): boolean {
  if (doc === null) return false;
  const covered = coveredInterval(
    scan.interval,
    scan.order,
    scan.lastKey,
    scan.done,
  );
  return (
    covered !== null &&
    intervalContains(covered, encodeKey(indexKey(doc, scan.keyFields)))
  );
}
