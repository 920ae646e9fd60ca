/**
 * File storage bytes: one file per stored blob under `<data>/storage/`, named
 * by its storage UUID. The `_storage` document (written by the caller after
 * `write` returns) is what makes a blob exist; bytes are never altered.
 *
 * Durability: a blob is written to a temporary name, fsynced, renamed into
 * place, and the directory is fsynced, all before `write` resolves, so the
 * commit of its `_storage` document (and the upload's acknowledgement) always
 * follows durable bytes. A crash before that commit leaves at most an orphan
 * blob, never a document without bytes.
 *
 * Usage:
 *   const blobs = BlobStore.open(dataDir);
 *   const { size, sha256 } = await blobs.write(uuid, chunks);
 *   const stream = blobs.read(uuid, { start: 0, end: size - 1 });
 *   blobs.remove(uuid);
 */
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export type WrittenBlob = { size: number; sha256: Buffer };

export class BlobStore {
  private constructor(readonly dir: string) {}

  static open(dataDir: string): BlobStore {
    const dir = path.join(dataDir, "storage");
    fs.mkdirSync(dir, { recursive: true });
    return new BlobStore(dir);
  }

  /**
   * Streams `chunks` to the blob `uuid`, hashing as it goes, and makes it
   * durable. `check` sees the finished size and digest before the blob is
   * moved into place; if it throws, nothing is kept.
   */
  async write(
    uuid: string,
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    check: (written: WrittenBlob) => void = () => undefined,
  ): Promise<WrittenBlob> {
    const final = this.#path(uuid);
    const temp = path.join(
      this.dir,
      `.${uuid}.${randomBytes(4).toString("hex")}.tmp`,
    );
    const handle = await fs.promises.open(temp, "wx");
    const hash = createHash("sha256");
    let size = 0;
    try {
      for await (const chunk of chunks) {
        hash.update(chunk);
        size += chunk.length;
        let offset = 0;
        while (offset < chunk.length) {
          const { bytesWritten } = await handle.write(
            chunk,
            offset,
            chunk.length - offset,
          );
          offset += bytesWritten;
        }
      }
      await handle.sync();
      await handle.close();
      const written = { size, sha256: hash.digest() };
      check(written);
      await fs.promises.rename(temp, final);
      await syncDirectory(this.dir);
      return written;
    } catch (error) {
      await handle.close().catch(() => undefined);
      await fs.promises.rm(temp, { force: true });
      throw error;
    }
  }

  /** The blob's bytes `start..end` (inclusive), or all of them. */
  read(uuid: string, range?: { start: number; end: number }): Readable {
    return fs.createReadStream(this.#path(uuid), range);
  }

  async readAll(uuid: string): Promise<Buffer> {
    return fs.promises.readFile(this.#path(uuid));
  }

  /** Removes the blob; a missing file is not an error (a crash may have removed it already). */
  remove(uuid: string): void {
    fs.rmSync(this.#path(uuid), { force: true });
  }

  #path(uuid: string): string {
    if (!UUID.test(uuid)) throw new Error(`Invalid storage UUID ${uuid}`);
    return path.join(this.dir, uuid);
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
