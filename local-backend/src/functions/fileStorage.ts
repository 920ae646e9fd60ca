/**
 * File storage (`ctx.storage`): the `_storage` system table plus blobs on disk
 * (storage/blobs.ts), the upload-URL tokens, and the storage syscalls.
 *
 * A stored file is a `_storage` document `{sha256 (base64), size, contentType}`
 * (convex-backend `model/file_storage/virtual_table.rs`: base64 since npm 1.9,
 * `contentType` null when the upload had none). Its storage UUID, the last
 * segment of its URL, is the document's 16-byte internal ID written as a UUID,
 * so a URL maps to its document without a second lookup table; legacy UUID
 * storage IDs are accepted wherever an `Id<"_storage">` is (`FileStorageId`).
 *
 * Lifecycle of a file: bytes written and fsynced (`BlobStore.write`) -> its
 * `_storage` document committed on the runner's writer executor (`exclusive`)
 * -> acknowledged. A delete removes the document in the caller's
 * transaction; the bytes go after that commit (the change feed below), so the
 * URL 404s as soon as the delete is visible.
 *
 * Usage:
 *   const files = FileStorage.open({ db, dataDir, exclusive, origin });
 *   createSyscalls({ db, nested, extensions: files.syscalls });
 *   const storageId = await files.store(chunks, "image/png");
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Database } from "../storage/database.ts";
import { BlobStore, type WrittenBlob } from "../storage/blobs.ts";
import { decodeId, encodeId, newInternalId } from "../values/ids.ts";
import type { Doc } from "../values/wire.ts";
import type { RequestContext, SyscallExtensions } from "./syscalls.ts";
import { Transaction } from "./transaction.ts";

export const STORAGE_TABLE = "_storage";
/** convex-backend `local_backend/src/storage.rs` `STORE_FILE_AUTHORIZATION_VALIDITY`. */
const UPLOAD_URL_VALIDITY_MS = 60 * 60 * 1000;
const UUID =
  /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i;

export type StoredFile = {
  id: string;
  uuid: string;
  sha256: string;
  size: number;
  contentType: string | null;
};

export class StorageError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export class FileStorage {
  readonly #db: Database;
  readonly #blobs: BlobStore;
  readonly #exclusive: <T>(task: () => T) => Promise<T>;
  readonly #origin: () => string;
  readonly #tokenKey: Buffer;
  readonly #storageTableNumber: number;

  private constructor(options: {
    db: Database;
    blobs: BlobStore;
    exclusive: <T>(task: () => T) => Promise<T>;
    origin: () => string;
    tokenKey: Buffer;
  }) {
    this.#db = options.db;
    this.#blobs = options.blobs;
    this.#exclusive = options.exclusive;
    this.#origin = options.origin;
    this.#tokenKey = options.tokenKey;
    const table = this.#db.table(STORAGE_TABLE);
    if (table === undefined) throw new Error("The _storage table is missing");
    this.#storageTableNumber = table.number;
    // Bytes of a deleted file go once the delete has committed.
    this.#db.onCommit(({ changes }) => {
      for (const change of changes) {
        if (
          change.table === STORAGE_TABLE &&
          change.after === null &&
          change.before !== null
        )
          this.#blobs.remove(uuidOfId(change.id));
      }
    });
  }

  /**
   * @param exclusive runs a commit between two functions (the runner's executor)
   * @param origin the deployment URL (`CONVEX_CLOUD_URL`) that URLs are built on
   */
  static open(options: {
    db: Database;
    dataDir: string;
    exclusive: <T>(task: () => T) => Promise<T>;
    origin: () => string;
  }): FileStorage {
    const blobs = BlobStore.open(options.dataDir);
    return new FileStorage({
      ...options,
      blobs,
      tokenKey: loadTokenKey(blobs.dir),
    });
  }

  // ---- upload URLs -------------------------------------------------------

  /** `{origin}/api/storage/upload?token=…` (convex-backend `file_storage/src/core.rs`). */
  generateUploadUrl(): string {
    const issued = Date.now().toString(36);
    const token = `${issued}.${this.#sign(issued)}`;
    return `${this.#origin()}/api/storage/upload?token=${token}`;
  }

  /** Throws a StorageError unless `token` came from `generateUploadUrl` within the last hour. */
  checkUploadToken(token: string | null): void {
    const [issued, signature, ...rest] = (token ?? "").split(".");
    const expected = Buffer.from(this.#sign(issued ?? ""));
    const actual = Buffer.from(signature ?? "");
    const valid =
      rest.length === 0 &&
      actual.length === expected.length &&
      timingSafeEqual(actual, expected);
    if (!valid) {
      throw new StorageError(
        "StorageTokenInvalid",
        "Invalid storage upload token: use a URL from storage.generateUploadUrl()",
        401,
      );
    }
    if (Date.now() - parseInt(issued, 36) > UPLOAD_URL_VALIDITY_MS) {
      throw new StorageError(
        "StorageTokenExpired",
        "This upload URL has expired: upload URLs are valid for 1 hour; generate a new one with storage.generateUploadUrl()",
        401,
      );
    }
  }

  #sign(payload: string): string {
    return createHmac("sha256", this.#tokenKey)
      .update(payload)
      .digest("base64url");
  }

  // ---- files -------------------------------------------------------------

  /**
   * Stores bytes as a new file and returns its `Id<"_storage">` once both the
   * bytes and the document are durable. `expectedSha256` (raw digest) fails
   * the store on a mismatch, as the real backend's `Digest` header check does.
   */
  async store(
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    contentType: string | null,
    expectedSha256?: Buffer,
  ): Promise<string> {
    const internalId = newInternalId();
    const id = encodeId(this.#storageTableNumber, internalId);
    const uuid = uuidOfInternalId(internalId);
    const check = ({ sha256 }: WrittenBlob) => {
      if (expectedSha256 !== undefined && !expectedSha256.equals(sha256)) {
        throw new StorageError(
          "Sha256Mismatch",
          `Sha256 mismatch. Expected: ${expectedSha256.toString("base64")} Actual: ${sha256.toString("base64")}`,
          400,
        );
      }
    };
    const written = await this.#blobs.write(uuid, chunks, check);
    let ts: bigint;
    try {
      ts = await this.#exclusive(() => {
        const doc: Doc = {
          _id: id,
          _creationTime: this.#db.nextCreationTime(),
          sha256: written.sha256.toString("base64"),
          size: written.size,
          contentType,
        };
        return this.#db.commit(new Map([[id, { table: STORAGE_TABLE, doc }]]))
          .ts;
      });
    } catch (error) {
      this.#blobs.remove(uuid);
      throw error;
    }
    await this.#db.durable(ts);
    return id;
  }

  /**
   * The file a storage ID names, read through `tx` (so a query depends on it),
   * or null. Throws Convex's error for a string that is neither an ID of
   * `_storage` nor a UUID (convex-backend `model/file_storage/mod.rs`).
   */
  lookup(
    storageId: unknown,
    tx: Transaction,
    layer = tx.root,
  ): StoredFile | null {
    const id = this.#resolveId(storageId);
    const doc = tx.get(id, STORAGE_TABLE, layer);
    if (doc === null) return null;
    return {
      id,
      uuid: uuidOfId(id),
      sha256: doc.sha256 as string,
      size: doc.size as number,
      contentType: (doc.contentType as string | null | undefined) ?? null,
    };
  }

  /** The file behind a URL's UUID, from committed state, or null. */
  lookupUuid(uuid: string): StoredFile | null {
    if (!UUID.test(uuid)) return null;
    return this.#readCommitted((tx) => this.lookup(uuid, tx));
  }

  urlOf(file: StoredFile): string {
    return `${this.#origin()}/api/storage/${file.uuid}`;
  }

  readStream(
    file: StoredFile,
    range?: { start: number; end: number },
  ): NodeJS.ReadableStream {
    return this.#blobs.read(file.uuid, range);
  }

  /** Deletes in the caller's transaction, or (from actions) in a commit of its own. */
  async delete(request: RequestContext, storageId: unknown): Promise<void> {
    const remove = (tx: Transaction, layer: Transaction["root"]) => {
      const file = this.lookup(storageId, tx, layer);
      if (file === null) {
        throw new StorageError(
          "StorageIdNotFound",
          `storage id ${String(storageId)} not found`,
          404,
        );
      }
      tx.delete(file.id, STORAGE_TABLE, layer);
    };
    if (request.tx !== null && request.layer !== null) {
      request.tx.assertOpen();
      remove(request.tx, request.layer);
      return;
    }
    const ts = await this.#exclusive(() => {
      const tx = new Transaction(this.#db, { readOnly: false });
      try {
        remove(tx, tx.root);
        return this.#db.commit(tx.pendingWrites()).ts;
      } finally {
        tx.close();
      }
    });
    await this.#db.durable(ts);
  }

  #readCommitted<T>(read: (tx: Transaction) => T): T {
    const tx = new Transaction(this.#db, { readOnly: true });
    try {
      return read(tx);
    } finally {
      tx.close();
    }
  }

  /** Reads through the running function's transaction, or committed state in actions. */
  #read<T>(
    request: RequestContext,
    read: (tx: Transaction, layer: Transaction["root"]) => T,
  ): T {
    if (request.tx !== null && request.layer !== null) {
      request.tx.assertOpen();
      return read(request.tx, request.layer);
    }
    return this.#readCommitted((tx) => read(tx, tx.root));
  }

  #resolveId(storageId: unknown): string {
    const invalid = () =>
      new StorageError(
        "InvalidStorageId",
        `Invalid storage ID: "${String(storageId)}". Storage ID should be an\n                    Id of '_storage' table, or a UUID string.`,
        400,
      );
    if (typeof storageId !== "string") throw invalid();
    const decoded = decodeId(storageId);
    if (decoded !== null) {
      if (decoded.tableNumber !== this.#storageTableNumber) {
        throw new StorageError(
          "InvalidArgument",
          "Invalid storage ID. Storage ID cannot be an ID on any table other than '_storage'.",
          400,
        );
      }
      return storageId;
    }
    const match = UUID.exec(storageId);
    if (match === null) throw invalid();
    const internalId = Buffer.from(match.slice(1).join(""), "hex");
    return encodeId(this.#storageTableNumber, new Uint8Array(internalId));
  }

  // ---- syscalls ----------------------------------------------------------

  /** The storage ops of `globalThis.Convex` (convex 1.48 `storage_impl.ts`). */
  readonly syscalls: SyscallExtensions = {
    async: {
      "1.0/storageGenerateUploadUrl": (request) => {
        requireWriter(request, "generateUploadUrl");
        return Promise.resolve(this.generateUploadUrl());
      },
      "1.0/storageGetUrl": (request, args) =>
        Promise.resolve(
          this.#read(request, (tx, layer) => {
            const file = this.lookup(args.storageId, tx, layer);
            return file === null ? null : this.urlOf(file);
          }),
        ),
      // The deprecated action API answers hex, unlike `_storage` (convex-backend
      // `isolate` `storage_get_metadata`).
      "1.0/storageGetMetadata": (request, args) =>
        Promise.resolve(
          this.#read(request, (tx, layer) => {
            const file = this.lookup(args.storageId, tx, layer);
            if (file === null) return null;
            return {
              storageId: file.id,
              sha256: Buffer.from(file.sha256, "base64").toString("hex"),
              size: file.size,
              contentType: file.contentType,
            };
          }),
        ),
      "1.0/storageDelete": async (request, args) => {
        requireWriter(request, "delete");
        await this.delete(request, args.storageId);
        return null;
      },
      "1.0/storageStore": async (request, args) => {
        requireAction(request, "store");
        const bytes = Buffer.from(args.blob as string, "base64");
        return this.store([bytes], contentTypeOf(args.contentType), sha(args));
      },
      "1.0/storageGet": async (request, args) => {
        requireAction(request, "get");
        const file = this.#read(request, (tx) =>
          this.lookup(args.storageId, tx),
        );
        if (file === null) return null;
        const bytes = await this.#blobs.readAll(file.uuid);
        return {
          blob: bytes.toString("base64"),
          contentType: file.contentType,
        };
      },
    },
    js: {
      "storage/storeBlob": async (request, args) => {
        requireAction(request, "store");
        const blob = args.blob as Blob;
        const options = args.options as { sha256?: string } | undefined;
        const bytes = new Uint8Array(await blob.arrayBuffer());
        return this.store(
          [bytes],
          contentTypeOf(blob.type),
          options?.sha256 === undefined
            ? undefined
            : Buffer.from(options.sha256, "base64"),
        );
      },
      "storage/getBlob": async (request, args) => {
        requireAction(request, "get");
        const file = this.#read(request, (tx) =>
          this.lookup(args.storageId, tx),
        );
        if (file === null) return null;
        const bytes = await this.#blobs.readAll(file.uuid);
        return new Blob([bytes], { type: file.contentType ?? "" });
      },
    },
  };
}

function uuidOfInternalId(internalId: Uint8Array): string {
  const hex = Buffer.from(internalId).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function uuidOfId(id: string): string {
  const decoded = decodeId(id);
  if (decoded === null) throw new Error(`Not a storage ID: ${id}`);
  return uuidOfInternalId(decoded.internalId);
}

function contentTypeOf(value: unknown): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

function sha(args: Record<string, unknown>): Buffer | undefined {
  return typeof args.sha256 === "string"
    ? Buffer.from(args.sha256, "base64")
    : undefined;
}

/** Queries read files; only mutations and actions create upload URLs or delete. */
function requireWriter(request: RequestContext, method: string): void {
  if (request.udfType === "query") {
    throw new Error(
      `storage.${method}() can only be called from a mutation or an action`,
    );
  }
}

function requireAction(request: RequestContext, method: string): void {
  if (request.udfType !== "action") {
    throw new Error(`storage.${method}() can only be called from an action`);
  }
}

/** The upload-token signing key, kept with the blobs so URLs outlive a restart. */
function loadTokenKey(dir: string): Buffer {
  const file = path.join(dir, ".upload-token-key");
  try {
    return fs.readFileSync(file);
  } catch {
    const key = randomBytes(32);
    fs.writeFileSync(file, key, { mode: 0o600 });
    return key;
  }
}
