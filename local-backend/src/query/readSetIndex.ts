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
 * Intervals. A scan covers the half-open byte interval of encoded keys that
 * `coveredInterval` (query/keys.ts, the one place that compares keys with
 * ranges) gives for it, which is exactly what `ReadSet.overlaps` tests.
 *
 * Each interval map is a treap ordered by lower bound and augmented with the
 * largest upper bound of each subtree (a classic interval tree): a stabbing
 * query skips every subtree that ends before the key or starts after it.
 * Bounds are held as latin1 strings (one character per byte, so JavaScript's
 * string order is the bytes' order): an insert into a tree of 10,000
 * compares some 75 bounds, and `Buffer.compare`'s argument checks made each
 * compare cost about 0.1 us against a few ns for a string compare.
 *
 * Usage:
 *   const index = new ReadSetIndex<Entry>();
 *   index.set(entry, outcome.readSet);      // replaces what entry read before
 *   for (const entry of index.affected(commit.changes)) ...
 *   index.delete(entry);
 */
import { indexKey } from "./indexRange.ts";
import { coveredInterval, encodeKey } from "./keys.ts";
import type {
  DocumentChange,
  ReadPredicate,
  ReadSet,
  ScanRecord,
} from "./readSet.ts";

/**
 * A bound between keys, an encoded key as a latin1 string: an interval is
 * `lo <= key < hi`.
 */
type Bound = string;

const asBound = (key: Buffer): Bound => key.toString("latin1");
const maxBound = (a: Bound, b: Bound) => (a >= b ? a : b);

/** The keys a scan has covered, as `[lo, hi)`; null when it covered none. */
export function scanInterval(scan: ScanRecord): [Bound, Bound] | null {
  const covered = coveredInterval(
    scan.interval,
    scan.order,
    scan.lastKey,
    scan.done,
  );
  return covered === null ? null : [asBound(covered.lo), asBound(covered.hi)];
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

function before<T>(a: Node<T>, b: Node<T>): boolean {
  return a.lo < b.lo || (a.lo === b.lo && a.seq < b.seq);
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
  if (before(node, root)) {
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
  if (before(node, root)) root.left = removeNode(root.left, node);
  else root.right = removeNode(root.right, node);
  update(root);
  return root;
}

function stab<T>(
  start: Node<T> | null,
  key: Bound,
  found: (value: T) => void,
): void {
  let node = start;
  while (node !== null) {
    if (key >= node.maxHi) return;
    stab(node.left, key, found);
    // Every node to the right starts at or after this one.
    if (key < node.lo) return;
    if (key < node.hi) found(node.value);
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

  stab(key: Bound, found: (value: T) => void): void {
    stab(this.#root, key, found);
  }
}

/** Shared by registrations with nothing of a kind; never written to. */
const NONE: never[] = [];

type IndexMap<T> = { keyFields: string[]; tree: IntervalTree<T> };

/** Where one subscriber's read set was filed, to take it out again. */
type Registration<T> = {
  readSet: ReadSet;
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
    // Most read sets are scans alone: no copies of their empty sets.
    const registration: Registration<T> = {
      readSet,
      ids: readSet.ids.size === 0 ? NONE : [...readSet.ids],
      tables: readSet.wholeTables.size === 0 ? NONE : [...readSet.wholeTables],
      predicates:
        readSet.predicates.length === 0 ? NONE : [...readSet.predicates],
      intervals: NONE,
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
      const filed = { table: scan.table, indexKey: key, node };
      // Just room for one, the usual case (a `[]` pushed to holds 17).
      if (registration.intervals === NONE) registration.intervals = [filed];
      else registration.intervals.push(filed);
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

  /**
   * Takes these subscribers out. When nearly all of the index goes, the
   * few that stay are filed again in a cleared one instead: a commit into
   * what 10,000 results of one socket read took them out one by one in
   * 12-19 ms (filing one again costs about two deletions, so only when at
   * most a fifth of what leaves stays).
   */
  deleteAll(subscribers: ReadonlySet<T>): void {
    const staying = this.#registered.size - subscribers.size;
    if (staying * 5 > subscribers.size) {
      for (const subscriber of subscribers) this.delete(subscriber);
      return;
    }
    const kept: [T, ReadSet][] = [];
    for (const [subscriber, { readSet }] of this.#registered)
      if (!subscribers.has(subscriber)) kept.push([subscriber, readSet]);
    this.clear();
    for (const [subscriber, readSet] of kept) this.set(subscriber, readSet);
  }

  /** Every subscriber filed. */
  keys(): IterableIterator<T> {
    return this.#registered.keys();
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
          tree.stab(
            asBound(encodeKey(indexKey(change.before, keyFields))),
            add,
          );
        if (change.after !== null)
          tree.stab(asBound(encodeKey(indexKey(change.after, keyFields))), add);
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
