/**
 * Storage benchmarks on a generated chat data folder (the app in `convex/`):
 * cold start to ready, RSS after start and after reading the newest page,
 * schema reload with nothing changed, and insert cost at 1k vs N documents;
 * each beside a bare better-sqlite3 baseline measured in the same run.
 * Backfills (issue 6): a new database index and a new search index over the
 * N messages, and a new index over 100 KB documents, each with the longest
 * and the p99 event-loop delay while it runs (a backfill slice holds the
 * loop that long; the aim is 20 ms at most).
 *
 * The folder is written through the store in big commits (`generateChat`),
 * so generating 1M messages takes minutes, not hours.
 *
 * Usage: npm run bench -- --only=storage [--quick]   (--quick: 100k only)
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import BetterSqlite3 from "better-sqlite3";
import { ConvexHttpClient } from "convex/browser";
import { chatApi as api } from "../e2e/helpers/chatApi.ts";
import { spawnCliBackend } from "./cliBackend.ts";
import {
  Database,
  type PendingWrite,
  type SchemaJson,
} from "../local-backend/src/storage/database.ts";
import { encodeId, newInternalId } from "../local-backend/src/values/ids.ts";
import type { Doc } from "../local-backend/src/values/wire.ts";
import { formatSummary, rssMiB, summarize } from "./stats.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const COMMIT_ROWS = 20_000;
const INSERT_ROUNDS = 200;
const LARGE_DOCS = 500;
const LARGE_DOC_BYTES = 100_000;

type Row = { case: string; value: number; unit: string; baseline?: number };

/** The chat's tables as `messages.send` writes them: one author, N messages
 *  (of `bodyBytes` each when given). */
async function generateChat(
  dir: string,
  messages: number,
  bodyBytes?: number,
): Promise<number> {
  const start = performance.now();
  const db = Database.open(dir);
  const users = db.tableForWrite("users");
  const author = encodeId(users.number, newInternalId());
  const first = new Map<string, PendingWrite>();
  first.set(author, {
    table: "users",
    doc: {
      _id: author,
      _creationTime: db.nextCreationTime(),
      name: "Bench",
      isAnonymous: true,
    },
    inserted: true,
  });
  db.commit(first);
  const table = db.tableForWrite("messages");
  const padding = "x".repeat(bodyBytes ?? 60);
  const perCommit =
    bodyBytes === undefined
      ? COMMIT_ROWS
      : Math.max(1, Math.floor((16 << 20) / bodyBytes));
  for (let done = 0; done < messages;) {
    const writes = new Map<string, PendingWrite>();
    for (let i = 0; i < perCommit && done < messages; i++, done++) {
      const doc: Doc = {
        _id: encodeId(table.number, newInternalId()),
        _creationTime: db.nextCreationTime(),
        author,
        body: `message ${done} ${padding}`,
      };
      writes.set(doc._id, { table: "messages", doc, inserted: true });
    }
    db.commit(writes);
    await new Promise((resolve) => setImmediate(resolve));
  }
  db.close();
  return performance.now() - start;
}

/** Starts the CLI on `data`; resolves at its ready line. */
async function startCli(data: string, startTimeoutMs?: number) {
  const started = performance.now();
  const { child, url } = await spawnCliBackend(data, startTimeoutMs);
  return { child, url, readyMs: performance.now() - started };
}

/** The floor for a cold start: a Node process that loads tsx and opens the file. */
async function bareStartMs(data: string): Promise<number> {
  const started = performance.now();
  const script = `const D=require("better-sqlite3");const db=new D(${JSON.stringify(path.join(data, "db.sqlite3"))});db.prepare("SELECT value FROM meta").all();db.close();`;
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "-e", script], {
      cwd: ROOT,
      stdio: "inherit",
    });
    child.once("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`exit ${code}`)),
    );
  });
  return performance.now() - started;
}

async function stop(child: ReturnType<typeof spawn>): Promise<void> {
  child.kill("SIGTERM");
  await new Promise((resolve) => child.once("exit", resolve));
}

/**
 * Single-message commits, one at a time, as `messages.send` makes them, into
 * each data folder in turn: one sample of each per round, so that every
 * folder is measured under the same load of the machine and their ratio
 * holds. Two times per insert: `commit`, what it holds the event loop (the
 * commit itself: its SQLite rows, COMMIT and fsync run on the group writer's
 * thread), and `durable`, from the commit until it is on disk (what a
 * mutation's answer waits for), beside the bare fsynced insert.
 */
async function insertSamples(
  dirs: string[],
): Promise<{ commit: number[]; durable: number[] }[]> {
  const dbs = dirs.map((dir) => Database.open(dir));
  const tables = dbs.map((db) => db.tableForWrite("messages").number);
  const samples = dirs.map(() => ({
    commit: [] as number[],
    durable: [] as number[],
  }));
  try {
    for (let i = 0; i < INSERT_ROUNDS; i++) {
      for (const [d, db] of dbs.entries()) {
        const doc: Doc = {
          _id: encodeId(tables[d], newInternalId()),
          _creationTime: db.nextCreationTime(),
          author: "x",
          body: `insert ${i}`,
        };
        const start = performance.now();
        const { ts } = db.commit(
          new Map([[doc._id, { table: "messages", doc, inserted: true }]]),
        );
        samples[d].commit.push(performance.now() - start);
        await db.durable(ts);
        samples[d].durable.push(performance.now() - start);
      }
    }
  } finally {
    for (const db of dbs) db.close();
  }
  return samples;
}

/**
 * 1,000 generated messages under the app's schema (its indexes built), the
 * reference the insert cost at N messages is compared with.
 */
async function smallChat(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-1k-"));
  await generateChat(dir, 1_000);
  const db = Database.open(dir);
  db.setSchema(JSON.parse((await loadAppSchema()).export()) as SchemaJson);
  db.close();
  return dir;
}

/**
 * A bare better-sqlite3 file (WAL, fsync per transaction) and the insert a
 * message commit makes: one document row and three index rows. The floor for
 * the storage and group commit benchmarks.
 */
export function bareStore(file: string): {
  db: BetterSqlite3.Database;
  insert: (n: number) => void;
} {
  const db = new BetterSqlite3(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec(
    "CREATE TABLE d (id TEXT PRIMARY KEY, json TEXT) WITHOUT ROWID; CREATE TABLE e (i INTEGER, k BLOB, id TEXT, PRIMARY KEY (i, k)) WITHOUT ROWID;",
  );
  const insertDoc = db.prepare("INSERT INTO d VALUES (?, ?)");
  const insertEntry = db.prepare("INSERT INTO e VALUES (?, ?, ?)");
  return {
    db,
    insert: (n) => {
      const id = newId();
      insertDoc.run(id, `{"author":"x","body":"message ${n}"}`);
      insertEntry.run(1, Buffer.from(id), id);
      insertEntry.run(2, Buffer.from(String(n).padStart(12, "0") + id), id);
      insertEntry.run(
        3,
        Buffer.from("x" + String(n).padStart(12, "0") + id),
        id,
      );
    },
  };
}

/** The same insert with bare better-sqlite3, fsynced, at `rows` rows. */
function bareInsertSamples(rows: number): number[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-bare-"));
  const { db, insert } = bareStore(path.join(dir, "db.sqlite3"));
  const one = db.transaction(insert);
  const fill = db.transaction((count: number) => {
    for (let n = 0; n < count; n++) insert(n);
  });
  fill(rows);
  const samples: number[] = [];
  for (let i = 0; i < INSERT_ROUNDS; i++) {
    const start = performance.now();
    one(rows + i);
    samples.push(performance.now() - start);
  }
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return samples;
}

const newId = () => Buffer.from(newInternalId()).toString("hex");

/** How long `work` took, and the longest and p99 event-loop delay meanwhile. */
async function slices(
  work: () => Promise<void>,
): Promise<{ ms: number; maxMs: number; p99Ms: number }> {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const start = performance.now();
  await work();
  const ms = performance.now() - start;
  delay.disable();
  return { ms, maxMs: delay.max / 1e6, p99Ms: delay.percentile(99) / 1e6 };
}

/** `schema` with one more index on `messages`: a database index, or a search index. */
function withMessagesIndex(
  schema: SchemaJson,
  kind: "database" | "search",
): SchemaJson {
  return {
    ...schema,
    tables: schema.tables.map((table) => {
      if (table.tableName !== "messages") return table;
      return kind === "database"
        ? {
            ...table,
            indexes: [
              ...table.indexes,
              { indexDescriptor: "by_body_bench", fields: ["body"] },
            ],
          }
        : {
            ...table,
            searchIndexes: [
              ...(table.searchIndexes ?? []),
              {
                indexDescriptor: "search_body_bench",
                searchField: "body",
                filterFields: ["author"],
              },
            ],
          };
    }),
  };
}

/**
 * Readies (backfills) `schema` on the folder and reports the time it took
 * and its slices, as event-loop delay.
 */
async function backfillRows(
  data: string,
  schema: SchemaJson,
  label: string,
  rows: Row[],
): Promise<void> {
  const db = Database.open(data);
  try {
    const run = await slices(() => db.prepareSchema(schema));
    rows.push(
      { case: `backfill ${label}`, value: run.ms, unit: "ms" },
      {
        case: `  longest slice (event-loop delay)`,
        value: run.maxMs,
        unit: "ms",
      },
      { case: `  p99 slice (event-loop delay)`, value: run.p99Ms, unit: "ms" },
    );
  } finally {
    db.close();
  }
}

/** A new index over LARGE_DOCS documents of LARGE_DOC_BYTES: slices whatever the document size. */
async function largeDocumentBackfill(rows: Row[]): Promise<void> {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "bench-large-"));
  try {
    await generateChat(data, LARGE_DOCS, LARGE_DOC_BYTES);
    const schema = JSON.parse((await loadAppSchema()).export()) as SchemaJson;
    const db = Database.open(data);
    db.setSchema(schema);
    db.close();
    await backfillRows(
      data,
      withMessagesIndex(schema, "database"),
      `a new index, ${LARGE_DOCS} messages of ${LARGE_DOC_BYTES / 1000} KB`,
      rows,
    );
  } finally {
    fs.rmSync(data, { recursive: true, force: true });
  }
}

async function sizeCase(
  messages: number,
  small: string,
  rows: Row[],
): Promise<void> {
  const label = messages >= 1e6 ? `${messages / 1e6}M` : `${messages / 1e3}k`;
  const data = fs.mkdtempSync(path.join(os.tmpdir(), `bench-chat-${label}-`));
  try {
    const generateMs = await generateChat(data, messages);
    rows.push({
      case: `generate ${label} messages`,
      value: generateMs,
      unit: "ms",
    });
    // The first start installs the schema once: its indexes are backfilled
    // over the existing data before the ready line.
    const first = await startCli(data, 30 * 60_000);
    rows.push({
      case: `first start (schema installed, indexes backfilled), ${label} messages`,
      value: first.readyMs,
      unit: "ms",
    });
    await stop(first.child);
    const bare = await bareStartMs(data);
    const cold = await startCli(data);
    rows.push({
      case: `cold start to ready, ${label} messages`,
      value: cold.readyMs,
      unit: "ms",
      baseline: bare,
    });
    const pid = cold.child.pid!;
    rows.push({
      case: `RSS after start, ${label} messages`,
      value: rssMiB(pid),
      unit: "MiB",
    });
    const client = new ConvexHttpClient(cold.url);
    const pageStart = performance.now();
    await client.query(api.messages.list, {
      paginationOpts: { numItems: 30, cursor: null },
    });
    rows.push({
      case: `newest page (30) over HTTP, ${label} messages`,
      value: performance.now() - pageStart,
      unit: "ms",
    });
    rows.push({
      case: `RSS after reading the newest page, ${label} messages`,
      value: rssMiB(pid),
      unit: "MiB",
    });
    await stop(cold.child);

    // Reload with the schema unchanged, in process: prepare + install.
    const db = Database.open(data);
    // The app's own schema, as the CLI installed it.
    const schema = JSON.parse((await loadAppSchema()).export()) as SchemaJson;
    db.setSchema(schema);
    const reloads: number[] = [];
    for (let i = 0; i < 5; i++) {
      const start = performance.now();
      await db.prepareSchema(schema);
      db.setSchema(schema);
      reloads.push(performance.now() - start);
    }
    db.close();
    rows.push({
      case: `reload, schema unchanged, ${label} messages (p50 of 5)`,
      value: summarize(reloads).p50,
      unit: "ms",
    });
    // Before the backfills below, so that both folders have the app's indexes only.
    const [inserts, inserts1k] = (await insertSamples([data, small])).map(
      ({ commit, durable }) => ({
        commit: summarize(commit),
        durable: summarize(durable),
      }),
    );
    const bareInserts = summarize(bareInsertSamples(messages));
    for (const [name, of] of [
      ["insert, event-loop time", "commit"],
      ["insert to durable", "durable"],
    ] as const) {
      console.log(formatSummary(`${name}, ${label} messages`, inserts[of]));
      console.log(formatSummary(`  the same, 1k messages`, inserts1k[of]));
      rows.push(
        {
          case: `${name} p50, ${label} messages`,
          value: inserts[of].p50,
          unit: "ms",
          ...(of === "durable" ? { baseline: bareInserts.p50 } : {}),
        },
        {
          case: `  the same at 1k messages, measured alongside`,
          value: inserts1k[of].p50,
          unit: "ms",
        },
        {
          case: `  ratio ${label} / 1k (target 1.5)`,
          value: inserts[of].p50 / inserts1k[of].p50,
          unit: "x",
        },
      );
    }
    console.log(
      formatSummary(`  bare better-sqlite3, ${label} rows`, bareInserts),
    );
    await backfillRows(
      data,
      withMessagesIndex(schema, "database"),
      `a new index, ${label} messages`,
      rows,
    );
    await backfillRows(
      data,
      withMessagesIndex(schema, "search"),
      `a new search index, ${label} messages`,
      rows,
    );
  } finally {
    fs.rmSync(data, { recursive: true, force: true });
  }
}

export async function storageBenchmarks(options: {
  quick: boolean;
}): Promise<Row[]> {
  const rows: Row[] = [];
  const small = await smallChat();
  try {
    for (const size of options.quick ? [100_000] : [100_000, 1_000_000]) {
      await sizeCase(size, small, rows);
    }
  } finally {
    fs.rmSync(small, { recursive: true, force: true });
  }
  await largeDocumentBackfill(rows);
  console.log("\nstorage");
  for (const row of rows) {
    const baseline =
      row.baseline === undefined
        ? ""
        : `   baseline ${row.baseline.toFixed(row.baseline < 10 ? 3 : 1)} ${row.unit}`;
    const digits = row.value < 10 ? 3 : 1;
    console.log(
      `${row.case.padEnd(60)} ${row.value.toFixed(digits).padStart(9)} ${row.unit}${baseline}`,
    );
  }
  console.log(JSON.stringify({ storage: rows }));
  return rows;
}

/**
 * The chat's `convex/schema.ts`, imported at run time by URL so that its types
 * (Convex Auth's, which bring in the DOM lib) stay out of the Node project.
 */
async function loadAppSchema(): Promise<{ export(): string }> {
  const url = new URL("../convex/schema.ts", import.meta.url).href;
  const module = (await import(url)) as { default: { export(): string } };
  return module.default;
}
