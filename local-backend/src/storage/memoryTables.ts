/**
 * The committed database state, in memory: documents per table and a sorted
 * array per index.
 *
 * Every table has the two built-in indexes, `by_id` (`_id`) and
 * `by_creation_time` (`_creationTime, _id`); schema indexes get the implicit
 * `_creationTime, _id` suffix, so every index order is total, as in Convex.
 * Only `Database.commit()` (storage/database.ts) mutates this state; transactions
 * read it and keep their own writes in layers on top.
 */
import type { Doc } from "../values/wire.ts";
import {
  compareKeys,
  comparePrefix,
  type IndexKey,
  indexKey,
  type KeyRange,
  type Order,
} from "../query/indexRange.ts";

export const BY_ID = "by_id";
export const BY_CREATION_TIME = "by_creation_time";

/** The whole range of an index. */
export const FULL_RANGE: KeyRange = {
  start: { key: [], inclusive: true },
  end: { key: [], inclusive: true },
};

type Entry = { key: IndexKey; id: string };

export class SortedIndex {
  readonly #entries: Entry[] = [];

  /** @param fields every field of the key, including the `_creationTime, _id` suffix */
  constructor(readonly fields: string[]) {}

  insert(doc: Doc): void {
    const key = indexKey(doc, this.fields);
    const at = this.#firstIndex((e) => compareKeys(e.key, key) >= 0);
    this.#entries.splice(at, 0, { key, id: doc._id });
  }

  delete(doc: Doc): void {
    const key = indexKey(doc, this.fields);
    const at = this.#firstIndex((e) => compareKeys(e.key, key) >= 0);
    if (at >= this.#entries.length || this.#entries[at].id !== doc._id) {
      throw new Error(
        `Index is out of sync: ${doc._id} is not where its key says`,
      );
    }
    this.#entries.splice(at, 1);
  }

  /**
   * Entries inside `range`, in `order`, starting strictly after `after` when given
   * (a full key, as a pagination cursor holds).
   */
  *scan(range: KeyRange, order: Order, after?: IndexKey): Generator<Entry> {
    let lo = this.#firstIndex((e) => {
      const c = comparePrefix(e.key, range.start.key);
      return range.start.inclusive ? c >= 0 : c > 0;
    });
    let hi = this.#firstIndex((e) => {
      const c = comparePrefix(e.key, range.end.key);
      return range.end.inclusive ? c > 0 : c >= 0;
    });
    if (after !== undefined) {
      if (order === "asc") {
        lo = Math.max(
          lo,
          this.#firstIndex((e) => compareKeys(e.key, after) > 0),
        );
      } else {
        hi = Math.min(
          hi,
          this.#firstIndex((e) => compareKeys(e.key, after) >= 0),
        );
      }
    }
    // Snapshot the bounds: commits never happen while a transaction reads (the
    // executor runs one function at a time), so positions stay valid.
    if (order === "asc") {
      for (let i = lo; i < hi; i++) yield this.#entries[i];
    } else {
      for (let i = hi - 1; i >= lo; i--) yield this.#entries[i];
    }
  }

  /** Binary search: the first position whose entry satisfies a monotone predicate. */
  #firstIndex(pred: (entry: Entry) => boolean): number {
    let lo = 0;
    let hi = this.#entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pred(this.#entries[mid])) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** An index and its key fields, the implicit `_creationTime, _id` suffix included. */
export type IndexDefinition = { name: string; keyFields: string[] };

export class Table {
  readonly docs = new Map<string, Doc>();
  readonly indexes = new Map<string, SortedIndex>();

  constructor(
    readonly name: string,
    readonly number: number,
  ) {}

  /** Rebuilds every index; called at start-up and when the schema changes. */
  setIndexes(indexes: readonly IndexDefinition[]): void {
    this.indexes.clear();
    for (const index of indexes) {
      this.indexes.set(index.name, new SortedIndex(index.keyFields));
    }
    for (const doc of this.docs.values()) {
      for (const index of this.indexes.values()) index.insert(doc);
    }
  }

  put(doc: Doc): void {
    const old = this.docs.get(doc._id);
    if (old !== undefined) {
      for (const index of this.indexes.values()) index.delete(old);
    }
    this.docs.set(doc._id, doc);
    for (const index of this.indexes.values()) index.insert(doc);
  }

  delete(id: string): void {
    const old = this.docs.get(id);
    if (old === undefined) return;
    for (const index of this.indexes.values()) index.delete(old);
    this.docs.delete(id);
  }
}
