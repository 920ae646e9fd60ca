/**
 * `globalThis.Convex`: the syscall interface the real `convex/server` library
 * calls (convex 1.48 `server/impl/syscall.ts`; catalogue in the spec, §3.3).
 *
 * The library passes no request handle, so the running function's state comes
 * from an AsyncLocalStorage (`requestStorage`), which follows its awaits. Every
 * argument and result is a JSON string; values inside are Convex JSON.
 * An op we do not implement fails loudly with its name, never silently.
 *
 * Usage:
 *   const convexGlobal = createSyscalls({ db, nested });
 *   requestStorage.run(request, () => fn.invokeQuery(argsJson));
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  convexToJson,
  jsonToConvex,
  type JSONValue,
  type Value,
} from "convex/values";
import type { Database } from "../storage/database.ts";
import type { Doc } from "../values/wire.ts";
import { type Identity, userIdentityOf } from "./authentication.ts";
import {
  type FunctionAddress,
  internalTableName,
  localTableName,
} from "./components.ts";
import type { UdfCall } from "./isolate.ts";
import type {
  PageResult,
  SerializedQuery,
  Transaction,
  WriteLayer,
} from "./transaction.ts";

/** The convex 1.48 library version every syscall carries; the backend is pinned to it. */
export const SUPPORTED_LIBRARY_VERSION = "1.48.0";

export type UdfType = "query" | "mutation" | "action";

/**
 * How long `1.0/queryPage` reads before the rest of a large page waits for
 * the next turn of the event loop (as a window ends after WINDOW_SLICE_MS in
 * deadline.ts): reading 20,000 rows in one go held every client for a second.
 */
const PAGE_SLICE_MS = 4;

/**
 * The state of one running function (top-level or nested).
 * - `tx`: the transaction for queries and mutations; null in actions
 * - `paginated`: set by the first `paginate()`; a second one fails (one per function in Convex)
 * - `journal`: the end cursor the subscription's journal pinned (queries only), and the
 *   continue cursor this run produced, which becomes the next journal
 */
export type RequestContext = {
  udfType: UdfType;
  path: string;
  /** The component the function belongs to ("" for the app): it names its tables and functions. */
  componentPath: string;
  requestId: string;
  /** Who called; nested calls inherit it (as on Convex). */
  identity: Identity;
  tx: Transaction | null;
  /** Where this call's writes go: the transaction's root, or a nested call's own layer. */
  layer: WriteLayer | null;
  /** The `_scheduled_functions` job this run executes, or null (`getRequestMetadata`). */
  scheduledJobId: string | null;
  /** `Date.now()` inside queries and mutations: fixed for the whole run, as in Convex. */
  nowMs: number;
  logLines: string[];
  journal: {
    endCursor: string | null;
    produced: string | null;
    paginated: boolean;
  };
  streams: Map<number, Iterator<Doc>>;
  nextStreamId: number;
  /**
   * Set while the run executes in an isolate worker (offThread.ts): a nested
   * `ctx.runQuery` / `ctx.runMutation` runs there too, as Convex runs it in
   * the caller's isolate. Null on the main thread.
   */
  offThread: NestedInvoker | null;
  /**
   * How the run goes on after it paused between two turns of the event loop
   * (a long window split at a syscall, deadline.ts; a page read over several
   * turns): the subscription hub's time slices (`Pace`), or the next turn
   * when null. Nested calls share their caller's.
   */
  pace: Pace | null;
};

/**
 * Schedules `resume`, in a later turn of the event loop. The hub's runs go
 * on only inside its time slices, so that runs paused in one turn do not
 * all go on back to back in the next (subscriptions.ts).
 */
export type Pace = (resume: () => void) => void;

/** Runs a nested call where its caller runs; resolves with its result JSON. */
export type NestedInvoker = {
  invoke(child: RequestContext, call: UdfCall): Promise<string>;
};

export const requestStorage = new AsyncLocalStorage<RequestContext>();

export function currentRequest(): RequestContext | undefined {
  return requestStorage.getStore();
}

/**
 * A syscall's result as JSON in a promise of the running context's realm,
 * which settles in the current window (deadline.ts `TimedRealm.nestedNow`):
 * handed to the context as it is.
 */
export type InWindow = { inWindow: Promise<string> };

function isInWindow(value: unknown): value is InWindow {
  return typeof value === "object" && value !== null && "inWindow" in value;
}

/** Calls into other functions, provided by the function runner. */
export type NestedCalls = {
  /** `ctx.runQuery` / `ctx.runMutation` inside a query or mutation: same transaction. */
  runInTransaction(
    parent: RequestContext,
    udfType: "query" | "mutation" | "snapshotQuery",
    address: FunctionAddress,
    args: JSONValue,
  ): Promise<JSONValue> | InWindow;
  /** `ctx.runQuery` / `runMutation` / `runAction` inside an action: a new transaction each. */
  runFromAction(
    parent: RequestContext,
    udfType: UdfType,
    address: FunctionAddress,
    args: JSONValue,
  ): Promise<JSONValue>;
  /** `createFunctionHandle(ref)`: a `function://` string for an existing function. */
  createFunctionHandle(
    parent: RequestContext,
    address: FunctionAddress,
  ): string;
};

export type ConvexGlobal = {
  syscall(op: string, jsonArgs: string): string;
  asyncSyscall(op: string, jsonArgs: string): Promise<string>;
  jsSyscall(op: string, args: Record<string, unknown>): unknown;
  /**
   * `asyncSyscall` with the result handed back synchronously when the op
   * completes at once (the database ops), and a promise otherwise; throws
   * synchronously. Lets a timed context finish a function in one window
   * (`deadline.ts`).
   */
  asyncSyscallNow?(op: string, jsonArgs: string): string | Promise<string>;
  /** Goes on with the running function in a later turn (its request's `pace`). */
  later?(resume: () => void): void;
};

/** Syscall arguments: JSON from the library, checked where each op reads them. */
export type Args = Record<string, unknown>;

/**
 * Ops implemented outside this module (file storage, vector search), looked
 * up by name after the built-in ones.
 */
export type SyscallExtensions = {
  async?: Record<
    string,
    (request: RequestContext, args: Args) => Promise<unknown>
  >;
  js?: Record<string, (request: RequestContext, args: Args) => unknown>;
};

export function createSyscalls(host: {
  db: Database;
  nested: NestedCalls;
  extensions?: SyscallExtensions[];
}): ConvexGlobal {
  const asyncExtensions = new Map(
    (host.extensions ?? []).flatMap((e) => Object.entries(e.async ?? {})),
  );
  const jsExtensions = new Map(
    (host.extensions ?? []).flatMap((e) => Object.entries(e.js ?? {})),
  );
  const sync = (op: string, args: Args): unknown => {
    const request = requireRequest(op);
    switch (op) {
      case "1.0/queryStream": {
        const { tx, layer } = requireTx(request, op);
        const queryId = request.nextStreamId++;
        request.streams.set(
          queryId,
          tx.stream(ownQuery(request, args.query as SerializedQuery), layer),
        );
        return { queryId };
      }
      case "1.0/queryCleanup":
        return { cleanedUp: request.streams.delete(args.queryId as number) };
      case "1.0/db/normalizeId":
        return {
          id: requireTx(request, op).tx.normalizeId(
            ownTable(request, args.table as string),
            args.idString as string,
          ),
        };
      case "1.0/getSnapshotTs":
        return convexToJson(request.tx?.snapshotTs() ?? host.db.lastTs);
      default:
        throw unsupported(op);
    }
  };

  /** Returns the result, or a promise of it for ops that wait (nested calls). */
  const async = (op: string, args: Args): unknown => {
    const request = requireRequest(op);
    switch (op) {
      case "1.0/get": {
        const { tx, layer } = requireTx(request, op);
        const doc = tx.get(
          args.id as string,
          tableOfDocument(request, host.db, args),
          layer,
          args.isSystem === true ? "db.system" : "db",
        );
        return doc === null ? null : convexToJson(doc);
      }
      case "1.0/insert": {
        const value = jsonToConvex(args.value as JSONValue) as Record<
          string,
          Value
        >;
        return {
          _id: requireTx(request, op).tx.insert(
            ownTable(request, args.table as string),
            value,
            request.layer!,
          ),
        };
      }
      case "1.0/shallowMerge":
        requireTx(request, op).tx.patch(
          args.id as string,
          decodePatch(args.value as JSONValue),
          tableOfDocument(request, host.db, args),
          request.layer!,
          "db",
        );
        return {};
      case "1.0/replace": {
        const value = jsonToConvex(args.value as JSONValue) as Record<
          string,
          Value
        >;
        requireTx(request, op).tx.replace(
          args.id as string,
          value,
          tableOfDocument(request, host.db, args),
          request.layer!,
          "db",
        );
        return {};
      }
      case "1.0/remove":
        requireTx(request, op).tx.delete(
          args.id as string,
          tableOfDocument(request, host.db, args),
          request.layer!,
          "db",
        );
        return {};
      case "1.0/queryStreamNext": {
        const stream = request.streams.get(args.queryId as number);
        if (stream === undefined)
          throw new Error(`Query ${String(args.queryId)} is closed or unknown`);
        requireTx(request, op);
        const next = stream.next();
        if (next.done === true) {
          request.streams.delete(args.queryId as number);
          return { value: null, done: true };
        }
        return { value: convexToJson(next.value), done: false };
      }
      case "1.0/queryPage":
        return queryPage(request, args);
      case "1.0/count":
        return requireTx(request, op).tx.count(
          ownTable(request, args.table as string),
          request.layer!,
        );
      case "1.0/runUdf": {
        requireTx(request, op);
        const udfType = args.udfType as "query" | "mutation" | "snapshotQuery";
        return host.nested.runInTransaction(
          request,
          udfType,
          functionAddress(args),
          args.args as JSONValue,
        );
      }
      case "1.0/actions/query":
      case "1.0/actions/mutation":
      case "1.0/actions/action": {
        if (request.udfType !== "action")
          throw new Error(`${op} can only be called from an action`);
        const udfType = op.slice("1.0/actions/".length) as UdfType;
        return host.nested.runFromAction(
          request,
          udfType,
          functionAddress(args),
          args.args as JSONValue,
        );
      }
      case "1.0/getUserIdentity":
        return userIdentityOf(request.identity);
      case "1.0/getFunctionMetadata":
        return { name: request.path, componentPath: request.componentPath };
      case "1.0/createFunctionHandle":
        return host.nested.createFunctionHandle(request, functionAddress(args));
      case "1.0/getDeploymentMetadata":
        return { name: "local", region: null, class: "local" };
      case "1.0/getRequestMetadata":
        return {
          ip: null,
          userAgent: null,
          requestId: request.requestId,
          scheduledFunctionId: request.scheduledJobId,
          authToken: null,
        };
      case "1.0/getTransactionMetrics":
        throw new Error(
          "getTransactionMetrics() is not supported by the local backend yet",
        );
      default: {
        const extension = asyncExtensions.get(op);
        if (extension === undefined) throw unsupported(op);
        return extension(request, args);
      }
    }
  };

  return {
    syscall(op, jsonArgs) {
      return JSON.stringify(sync(op, JSON.parse(jsonArgs) as Args) ?? null);
    },
    async asyncSyscall(op, jsonArgs) {
      return resultText(await async(op, JSON.parse(jsonArgs) as Args));
    },
    asyncSyscallNow(op, jsonArgs) {
      const result = async(op, JSON.parse(jsonArgs) as Args);
      if (result instanceof Promise) {
        // Handled at once, with no call in between: a watchdog cut before
        // the function's `await` reached it (this runs inside its window)
        // would leave a rejection (a page read on after its transaction
        // closed) that nothing handles, and Node reports it as a bug.
        const text = result.then(resultText);
        text.catch(() => undefined);
        return text;
      }
      if (isInWindow(result)) return result.inWindow;
      return resultText(result);
    },
    later(resume) {
      later(currentRequest() ?? null, resume);
    },
    jsSyscall(op, args) {
      const extension = jsExtensions.get(op);
      if (extension === undefined) throw unsupported(op);
      return extension(requireRequest(op), args);
    },
  };
}

function queryPage(request: RequestContext, args: Args): unknown {
  const { tx, layer } = requireTx(request, "1.0/queryPage");
  const query = ownQuery(request, args.query as SerializedQuery);
  if (request.journal.paginated) {
    throw new Error(
      "This query or mutation function ran multiple paginated queries. Convex only supports a single paginated query in each function.",
    );
  }
  request.journal.paginated = true;
  const steps = tx.pageSteps(
    {
      query,
      cursor: (args.cursor as string | null) ?? null,
      endCursor: (args.endCursor as string | null) ?? request.journal.endCursor,
      pageSize: args.pageSize as number,
      maximumRowsRead: (args.maximumRowsRead as number | null) ?? null,
      maximumBytesRead: (args.maximumBytesRead as number | null) ?? null,
    },
    layer,
  );
  let done: PageResult | null = null;
  const encoded: string[] = [];
  /**
   * Runs for up to PAGE_SLICE_MS: reads the page, then encodes its documents
   * to JSON text (as many milliseconds again for a page of thousands); the
   * syscall's result once both are complete. Encoded a document at a time,
   * since one `JSON.stringify` of a 2.4 MiB page held the thread for 13 ms.
   */
  const slice = (): JsonText | null => {
    const started = performance.now();
    while (done === null) {
      const step = steps.next();
      if (step.done === true) done = step.value;
      else if (performance.now() - started >= PAGE_SLICE_MS) return null;
    }
    const { page, ...rest } = done;
    while (encoded.length < page.length) {
      encoded.push(JSON.stringify(convexToJson(page[encoded.length])));
      if (
        encoded.length % 64 === 0 &&
        performance.now() - started >= PAGE_SLICE_MS
      )
        return null;
    }
    request.journal.produced = done.continueCursor;
    return new JsonText(
      `{"page":[${encoded.join(",")}],${JSON.stringify(rest).slice(1)}`,
    );
  };
  const first = slice();
  if (first !== null) return first;
  // A large page (`numItems: 1e9` over thousands of rows) is read over
  // several turns of the event loop, so other clients are served meanwhile;
  // the function goes on with it in a turn of its own too, as decoding it
  // there takes as long again (15 ms for 2.4 MiB).
  return new Promise((resolve, reject) => {
    const resume = () => {
      try {
        const result = slice();
        if (result === null) later(request, resume);
        else later(request, () => resolve(result));
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    };
    later(request, resume);
  });
}

/** A syscall's result already encoded (a page encoded a document at a time). */
class JsonText {
  constructor(readonly text: string) {}
}

/** A syscall's result as the JSON text the library decodes. */
function resultText(value: unknown): string {
  return value instanceof JsonText ? value.text : JSON.stringify(value ?? null);
}

/** `resume` in a later turn, as the request paces its run (`RequestContext.pace`). */
function later(request: RequestContext | null, resume: () => void): void {
  if (request?.pace) request.pace(resume);
  else setImmediate(resume);
}

/** `db.patch` values: top-level `{"$undefined": null}` removes a field (convex `patchValueToJson`). */
function decodePatch(json: JSONValue): Record<string, Value | undefined> {
  const result: Record<string, Value | undefined> = {};
  for (const [field, value] of Object.entries(
    json as Record<string, JSONValue>,
  )) {
    const isUndefined =
      value !== null &&
      typeof value === "object" &&
      !Array.isArray(value) &&
      Object.keys(value).length === 1 &&
      "$undefined" in value;
    result[field] = isUndefined ? undefined : jsonToConvex(value);
  }
  return result;
}

/** The address a call names (convex 1.48 `getFunctionAddress`): exactly one of three fields. */
function functionAddress(args: Args): FunctionAddress {
  if (typeof args.name === "string") return { name: args.name };
  if (typeof args.reference === "string") return { reference: args.reference };
  if (typeof args.functionHandle === "string")
    return { functionHandle: args.functionHandle };
  throw new Error(
    "A function call needs a name, a reference or a function handle",
  );
}

// ---- component namespaces ------------------------------------------------
// A function names tables as its component knows them; the database knows
// them by internal names (components.ts). Mapping here, at the boundary, keeps
// the transaction and storage layers unaware of components.

/** A table name no table has ("@" is reserved for namespaces). */
const FOREIGN_TABLE = "@";

function ownTable(request: RequestContext, tableName: string): string {
  return internalTableName(request.componentPath, tableName);
}

/**
 * The table argument of a document call, mapped; a call without one (legacy
 * `db.get(id)`) on another namespace's ID gets a table name it cannot match,
 * so it sees no document, as a function of another component would.
 */
function tableOfDocument(
  request: RequestContext,
  db: Database,
  args: Args,
): string | undefined {
  if (typeof args.table === "string") return ownTable(request, args.table);
  const table = db.tableOfId(args.id as string);
  if (table === undefined) return undefined;
  return localTableName(request.componentPath, table.name) === null
    ? FOREIGN_TABLE
    : undefined;
}

function ownQuery(
  request: RequestContext,
  query: SerializedQuery,
): SerializedQuery {
  const source = query.source;
  switch (source.type) {
    case "FullTableScan":
      return {
        ...query,
        source: { ...source, tableName: ownTable(request, source.tableName) },
      };
    case "IndexRange":
    case "Search": {
      const dot = source.indexName.indexOf(".");
      if (dot <= 0) return query;
      return {
        ...query,
        source: {
          ...source,
          indexName: `${ownTable(request, source.indexName.slice(0, dot))}${source.indexName.slice(dot)}`,
        },
      };
    }
    default:
      source satisfies never;
      return query;
  }
}

function requireRequest(op: string): RequestContext {
  const request = requestStorage.getStore();
  if (request === undefined) {
    throw new Error(
      `Syscall ${op} was made outside of a running Convex function (at module load time?)`,
    );
  }
  return request;
}

function requireTx(
  request: RequestContext,
  op: string,
): { tx: Transaction; layer: WriteLayer } {
  if (request.tx === null || request.layer === null) {
    throw new Error(
      `${op} is a database call, which actions cannot make: use ctx.runQuery or ctx.runMutation`,
    );
  }
  request.tx.assertOpen();
  return { tx: request.tx, layer: request.layer };
}

function unsupported(op: string): Error {
  const known: Record<string, string> = {
    "1.0/storageGetUrl": "file storage",
    "1.0/storageGetMetadata": "file storage",
    "1.0/storageGenerateUploadUrl": "file storage",
    "1.0/storageDelete": "file storage",
    "1.0/storageStore": "file storage",
    "1.0/storageGet": "file storage",
    "storage/storeBlob": "file storage",
    "storage/getBlob": "file storage",
    "1.0/actions/vectorSearch": "vector search",
    "1.0/signJwt": "ctx.auth.signJwt",
    "1.0/createServiceToken": "Convex-hosted services",
    "1.0/getServiceUrl": "Convex-hosted services",
  };
  const feature = known[op];
  return new Error(
    feature === undefined
      ? `Unknown syscall "${op}": the local backend supports convex ${SUPPORTED_LIBRARY_VERSION}; is a different convex version installed?`
      : `The local backend does not support ${feature} yet (syscall ${op})`,
  );
}
