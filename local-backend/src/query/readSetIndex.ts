/**
 * Read sets indexed for invalidation: which subscribers a commit's writes can
 * affect, found in O(log S + affected) instead of by asking every read set.
 *
 * This is convex-backend's `SubscriptionMap` (`crates/database/src/subscription.rs`):
 * per table and index, an interval map from the key intervals subscribers read
 * to those subscribers; each written document, before and after the write,
 * looks up its key in every index of its table that some read set scanned.
 * Documents fetched by ID and tables read whole (`count()`) are hash lookups.
 *
 * Intervals. A scan (`ScanRecord`: a range, a cursor it started after, the
 * last key it handed out, whether it reached the end) covers exactly the keys
 * `ReadSet.overlaps` says it covers, written as an open interval between two
 * bounds. A bound lies between keys: `(prefix, -1)` just before every key that
 * starts with `prefix`, `(prefix, +1)` just after them (`[]` is before or after
 * everything). Cursors and last keys are whole index keys, so `(key, ±1)` is
 * just before or after that one key. A key never equals a bound, which leaves
 * no inclusive/exclusive cases below.
 *
 * Each interval map is a treap ordered by lower bound and augmented with the
 * largest upper bound of each subtree (a classic interval tree): a stabbing
 * query skips every subtree that ends before the key or starts after it.
 *
 * Usage:
 *   const index = new ReadSetIndex<Entry>();
 *   index.set(entry, outcome.readSet);      // replaces what entry read before
 *   for (const entry of index.affected(commit.changes)) ...
 *   index.delete(entry);
 */
import { compareValues } from "convex/values";
import { type IndexKey, indexKey } from "./indexRange.ts";
import type {
  DocumentChange,
  ReadPredicate,
  ReadSet,
  ScanRecord,
} from "./readSet.ts";

type Bound = { key: IndexKey; side: -1 | 1 };

/** Where a whole key lies relative to a bound; never 0. */
function compareKeyToBound(key: IndexKey, bound: Bound): number {
  const prefix = bound.key;
  for (let i = 0; i < prefix.length; i++) {
    if (i >= key.length) return -1;
    const cmp = compareValues(key[i], prefix[i]);
    if (cmp !== 0) return cmp;
  }
  return -bound.side;
}

function compareBounds(a: Bound, b: Bound): number {
  const n = Math.min(a.key.length, b.key.length);
  for (let i = 0; i < n; i++) {
    const cmp = compareValues(a.key[i], b.key[i]);
    if (cmp !== 0) return cmp;
  }
  if (a.key.length === b.key.length) return a.side - b.side;
  // The shorter prefix's region contains the longer one's.
  return a.key.length < b.key.length ? a.side : -b.side;
}

const maxBound = (a: Bound, b: Bound) => (compareBounds(a, b) >= 0 ? a : b);
const minBound = (a: Bound, b: Bound) => (compareBounds(a, b) <= 0 ? a : b);

/** The keys a scan has covered, as an open interval; null when it covered none. */
export function scanInterval(scan: ScanRecord): [Bound, Bound] | null {
  if (scan.lastKey === undefined && !scan.done) return null;
  const { start, end } = scan.range;
  let lo: Bound = { key: start.key, side: start.inclusive ? -1 : 1 };
  let hi: Bound = { key: end.key, side: end.inclusive ? 1 : -1 };
  const asc = scan.order === "asc";
  if (scan.after !== undefined) {
    if (asc) lo = maxBound(lo, { key: scan.after, side: 1 });
    else hi = minBound(hi, { key: scan.after, side: -1 });
  }
  if (!scan.done && scan.lastKey !== undefined) {
    if (asc) hi = minBound(hi, { key: scan.lastKey, side: 1 });
    else lo = maxBound(lo, { key: scan.lastKey, side: -1 });
  }
  return compareBounds(lo, hi) < 0 ? [lo, hi] : null;
}

type Node<T> = {
  lo: Bound;
  hi: Bound;
  value: T;
  /** Breaks ties between equal lower bounds, so every node has one place. */
  seq: number;
  priority: number;
  maxHi: Bound;
  left: Node<T> | null;
  right: Node<T> | null;
};

function order<T>(a: Node<T>, b: Node<T>): number {
  return compareBounds(a.lo, b.lo) || a.seq - b.seq;
}

function update<T>(node: Node<T>): void {
  let max = node.hi;
  if (node.left !== null) max = maxBound(max, node.left.maxHi);
  if (node.right !== null) max = maxBound(max, node.right.maxHi);
  node.maxHi = max;
}

function rotateRight<T>(node: Node<T>): Node<T> {
  const left = node.left!;
  node.left = left.right;
  left.right = node;
  update(node);
  update(left);
  return left;
}

function rotateLeft<T>(node: Node<T>): Node<T> {
  const right = node.right!;
  node.right = right.left;
  right.left = node;
  update(node);
  update(right);
  return right;
}

function insertNode<T>(root: Node<T> | null, node: Node<T>): Node<T> {
  if (root === null) return node;
  if (order(node, root) < 0) {
    root.left = insertNode(root.left, node);
    if (root.left.priority > root.priority) return rotateRight(root);
  } else {
    root.right = insertNode(root.right, node);
    if (root.right.priority > root.priority) return rotateLeft(root);
  }
  update(root);
  return root;
}

/** Joins two treaps where every node of `a` orders before every node of `b`. */
function merge<T>(a: Node<T> | null, b: Node<T> | null): Node<T> | null {
  if (a === null) return b;
  if (b === null) return a;
  if (a.priority > b.priority) {
    a.right = merge(a.right, b);
    update(a);
    return a;
  }
  b.left = merge(a, b.left);
  update(b);
  return b;
}

function removeNode<T>(root: Node<T> | null, node: Node<T>): Node<T> | null {
  if (root === null) return null;
  if (root === node) return merge(root.left, root.right);
  if (order(node, root) < 0) root.left = removeNode(root.left, node);
  else root.right = removeNode(root.right, node);
  update(root);
  return root;
}

function stab<T>(
  start: Node<T> | null,
  key: IndexKey,
  found: (value: T) => void,
): void {
  let node = start;
  while (node !== null) {
    if (compareKeyToBound(key, node.maxHi) > 0) return;
    stab(node.left, key, found);
    // Every node to the right starts at or after this one.
    if (compareKeyToBound(key, node.lo) < 0) return;
    if (compareKeyToBound(key, node.hi) < 0) found(node.value);
    node = node.right;
  }
}

class IntervalTree<T> {
  #root: Node<T> | null = null;
  #seq = 0;
  size = 0;

  insert(lo: Bound, hi: Bound, value: T): Node<T> {
    const node: Node<T> = {
      lo,
      hi,
      value,
      seq: this.#seq++,
      priority: Math.random(),
      maxHi: hi,
      left: null,
      right: null,
    };
    this.#root = insertNode(this.#root, node);
    this.size++;
    return node;
  }

  remove(node: Node<T>): void {
    this.#root = removeNode(this.#root, node);
    this.size--;
  }

  stab(key: IndexKey, found: (value: T) => void): void {
    stab(this.#root, key, found);
  }
}

type IndexMap<T> = { keyFields: string[]; tree: IntervalTree<T> };

/** Where one subscriber's read set was filed, to take it out again. */
type Registration<T> = {
  ids: string[];
  tables: string[];
  predicates: ReadPredicate[];
  intervals: { table: string; indexKey: string; node: Node<T> }[];
};

export class ReadSetIndex<T> {
  readonly #byId = new Map<string, Set<T>>();
  readonly #byTable = new Map<string, Set<T>>();
  /** table → subscriber → its predicate reads of that table (text searches). */
  readonly #predicates = new Map<string, Map<T, ReadPredicate[]>>();
  /** table → index (its key fields) → interval map. */
  readonly #indexes = new Map<string, Map<string, IndexMap<T>>>();
  readonly #registered = new Map<T, Registration<T>>();

  get size(): number {
    return this.#registered.size;
  }

  has(subscriber: T): boolean {
    return this.#registered.has(subscriber);
  }

  /** Files what `subscriber` read, replacing what it read before. */
  set(subscriber: T, readSet: ReadSet): void {
    this.delete(subscriber);
    const registration: Registration<T> = {
      ids: [...readSet.ids],
      tables: [...readSet.wholeTables],
      predicates: [...readSet.predicates],
      intervals: [],
    };
    for (const predicate of registration.predicates) {
      let bySubscriber = this.#predicates.get(predicate.table);
      if (bySubscriber === undefined) {
        bySubscriber = new Map();
        this.#predicates.set(predicate.table, bySubscriber);
      }
      const list = bySubscriber.get(subscriber);
      if (list === undefined) bySubscriber.set(subscriber, [predicate]);
      else list.push(predicate);
    }
    for (const id of registration.ids) addTo(this.#byId, id, subscriber);
    for (const table of registration.tables)
      addTo(this.#byTable, table, subscriber);
    for (const scan of readSet.scans) {
      const interval = scanInterval(scan);
      if (interval === null) continue;
      const key = scan.keyFields.join("\0");
      let indexes = this.#indexes.get(scan.table);
      if (indexes === undefined) {
        indexes = new Map();
        this.#indexes.set(scan.table, indexes);
      }
      let map = indexes.get(key);
      if (map === undefined) {
        map = { keyFields: scan.keyFields, tree: new IntervalTree() };
        indexes.set(key, map);
      }
      const node = map.tree.insert(interval[0], interval[1], subscriber);
      registration.intervals.push({ table: scan.table, indexKey: key, node });
    }
    this.#registered.set(subscriber, registration);
  }

  delete(subscriber: T): void {
    const registration = this.#registered.get(subscriber);
    if (registration === undefined) return;
    this.#registered.delete(subscriber);
    for (const id of registration.ids) removeFrom(this.#byId, id, subscriber);
    for (const table of registration.tables)
      removeFrom(this.#byTable, table, subscriber);
    for (const { table } of registration.predicates) {
      const bySubscriber = this.#predicates.get(table);
      bySubscriber?.delete(subscriber);
      if (bySubscriber?.size === 0) this.#predicates.delete(table);
    }
    for (const { table, indexKey: key, node } of registration.intervals) {
      const indexes = this.#indexes.get(table)!;
      const map = indexes.get(key)!;
      map.tree.remove(node);
      if (map.tree.size === 0) {
        indexes.delete(key);
        if (indexes.size === 0) this.#indexes.delete(table);
      }
    }
  }

  clear(): void {
    this.#byId.clear();
    this.#byTable.clear();
    this.#predicates.clear();
    this.#indexes.clear();
    this.#registered.clear();
  }

  /** Every subscriber whose read set one of these writes falls into. */
  affected(changes: readonly DocumentChange[]): Set<T> {
    const found = new Set<T>();
    const add = (subscriber: T) => found.add(subscriber);
    for (const change of changes) {
      this.#byTable.get(change.table)?.forEach(add);
      this.#byId.get(change.id)?.forEach(add);
      this.#predicates.get(change.table)?.forEach((predicates, subscriber) => {
        if (
          predicates.some(
            ({ matches }) =>
              (change.before !== null && matches(change.before)) ||
              (change.after !== null && matches(change.after)),
          )
        )
          found.add(subscriber);
      });
      const indexes = this.#indexes.get(change.table);
      if (indexes === undefined) continue;
      for (const { keyFields, tree } of indexes.values()) {
        if (change.before !== null)
          tree.stab(indexKey(change.before, keyFields), add);
        if (change.after !== null)
          tree.stab(indexKey(change.after, keyFields), add);
      }
    }
    return found;
  }
}

function addTo<K, T>(map: Map<K, Set<T>>, key: K, value: T): void {
  let set = map.get(key);
  if (set === undefined) {
    set = new Set();
    map.set(key, set);
  }
  set.add(value);
}

function removeFrom<K, T>(map: Map<K, Set<T>>, key: K, value: T): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}
