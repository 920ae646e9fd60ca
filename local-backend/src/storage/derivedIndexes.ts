/**
 * What text-search and vector indexes share: indexes derived from a table's
 * documents, kept in SQLite beside them, reconciled with the schema's
 * definitions and maintained from each commit's document changes.
 *
 * Lifecycle of an index: declared in the schema -> built from the table's
 * documents by `setSchema` (its definition stored as JSON) -> kept current by
 * `apply` inside every commit's SQLite transaction -> dropped by the first
 * `setSchema` that no longer declares it, or rebuilt when its definition
 * changed. An unchanged definition is left alone, so a restart or a reload
 * costs nothing per document.
 *
 * Usage (searchIndex.ts, vectorIndex.ts):
 *   readonly #derived = new DerivedIndexes(db, { keyOf, stored, drop, put, insert, remove });
 *   this.#derived.setSchema(definitions, docsOf);
 *   this.#derived.apply(changes);   // inside the commit transaction
 */
import type BetterSqlite3 from "better-sqlite3";
import type { DocumentChange } from "../query/readSet.ts";
import type { Doc } from "../values/wire.ts";

/** Where an index's rows are filed: its table and name. */
export function derivedIndexKey(definition: {
  table: string;
  name: string;
}): string {
  return `${definition.table}.${definition.name}`;
}

/** How one kind of derived index stores its definitions and entries. */
export type DerivedIndexStore<D extends { table: string }> = {
  keyOf(definition: D): string;
  /** The indexes built so far, with their definitions as JSON. */
  stored(): { key: string; definition: string }[];
  /** Removes an index's definition and every entry. */
  drop(key: string): void;
  put(key: string, definitionJson: string): void;
  insert(definition: D, doc: Doc): void;
  remove(definition: D, doc: Doc): void;
};

export class DerivedIndexes<D extends { table: string }> {
  readonly #db: BetterSqlite3.Database;
  readonly #store: DerivedIndexStore<D>;
  /** Built indexes by table. */
  #byTable = new Map<string, D[]>();

  constructor(db: BetterSqlite3.Database, store: DerivedIndexStore<D>) {
    this.#db = db;
    this.#store = store;
  }

  /** Drops undeclared indexes and builds new or changed ones from `docsOf(table)`. */
  setSchema(
    definitions: readonly D[],
    docsOf: (table: string) => Iterable<Doc>,
  ): void {
    const store = this.#store;
    const wanted = new Map(definitions.map((d) => [store.keyOf(d), d]));
    this.#db.transaction(() => {
      for (const { key, definition } of store.stored()) {
        const want = wanted.get(key);
        if (want !== undefined && JSON.stringify(want) === definition) {
          wanted.delete(key);
          continue;
        }
        store.drop(key);
      }
      for (const [key, definition] of wanted) {
        store.put(key, JSON.stringify(definition));
        for (const doc of docsOf(definition.table))
          store.insert(definition, doc);
      }
    })();
    this.#byTable = new Map();
    for (const definition of definitions) {
      const list = this.#byTable.get(definition.table) ?? [];
      list.push(definition);
      this.#byTable.set(definition.table, list);
    }
  }

  /** Applies a commit's document changes; call inside its SQLite transaction. */
  apply(changes: readonly DocumentChange[]): void {
    for (const change of changes) {
      const indexes = this.#byTable.get(change.table);
      if (indexes === undefined) continue;
      for (const definition of indexes) {
        if (change.before !== null)
          this.#store.remove(definition, change.before);
        if (change.after !== null) this.#store.insert(definition, change.after);
      }
    }
  }
}
