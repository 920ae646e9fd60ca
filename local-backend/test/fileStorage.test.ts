/**
 * File storage end to end: upload URLs taking one POST of any bytes, URLs
 * served by the backend (whole files and ranges), `_storage` metadata,
 * deletes (in mutations, rolled back with them, and from actions),
 * `store`/`get` in actions, and an acknowledged upload surviving `kill -9`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { afterEach, describe, expect, test } from "vitest";
import { parseRange } from "../src/http/storageRoutes.ts";
import { startBackend } from "../src/index.ts";
import {
  quietLogger,
  REPO_ROOT,
  rejection,
  removeDir,
  startTestBackend,
  type TestBackend,
  tempDir,
  waitFor,
  withTimeout,
} from "./helpers.ts";

export const FILES_FIXTURE = fileURLToPath(
  new URL("./fixture-files/convex", import.meta.url),
);
// The fixture has no _generated/: its functions are addressed by name.
const api = anyApi;

const harnesses: TestBackend[] = [];
afterEach(async () => {
  for (const harness of harnesses.splice(0)) await harness.stop();
});

async function start(): Promise<{
  harness: TestBackend;
  client: ConvexHttpClient;
}> {
  const harness = await startTestBackend({ functions: FILES_FIXTURE });
  harnesses.push(harness);
  return { harness, client: harness.httpClient() };
}

/** Every byte value, twice, in a scrambled order: no text encoding survives this unaltered. */
function binaryBytes(): Buffer {
  return Buffer.concat([
    Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
    randomBytes(4096),
    Buffer.from([0xff, 0xfe, 0x00, 0x0d, 0x0a, 0xc3, 0x28]),
  ]);
}

async function upload(
  client: ConvexHttpClient,
  bytes: Buffer,
  headers: Record<string, string> = { "Content-Type": "image/png" },
): Promise<string> {
  const url = (await client.mutation(
    api.files.generateUploadUrl,
    {},
  )) as string;
  const response = await fetch(url, { method: "POST", headers, body: bytes });
  expect(response.status).toBe(200);
  const { storageId } = (await response.json()) as { storageId: string };
  return storageId;
}

describe("file storage", () => {
  test("an uploaded binary file is served byte for byte with its content type", async () => {
    const { harness, client } = await start();
    const bytes = binaryBytes();
    const url = (await client.mutation(
      api.files.generateUploadUrl,
      {},
    )) as string;
    expect(url).toMatch(
      new RegExp(`^${harness.url}/api/storage/upload\\?token=[^&]+$`),
    );
    const storageId = await upload(client, bytes);

    const fileUrl = (await client.query(api.files.getUrl, {
      storageId,
    })) as string;
    expect(fileUrl).toMatch(
      new RegExp(
        `^${harness.url}/api/storage/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`,
      ),
    );
    const response = await fetch(fileUrl);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("image/png");
    expect(response.headers.get("accept-ranges")).toBe("bytes");
    expect(response.headers.get("digest")).toBe(
      `sha-256=${createHash("sha256").update(bytes).digest("base64")}`,
    );
    expect(Buffer.from(await response.arrayBuffer()).equals(bytes)).toBe(true);
  });

  test("a range request returns exactly those bytes with 206 and Content-Range", async () => {
    const { client } = await start();
    const bytes = binaryBytes();
    const storageId = await upload(client, bytes);
    const fileUrl = (await client.query(api.files.getUrl, {
      storageId,
    })) as string;

    const partial = await fetch(fileUrl, {
      headers: { Range: "bytes=250-1023" },
    });
    expect(partial.status).toBe(206);
    expect(partial.headers.get("content-range")).toBe(
      `bytes 250-1023/${bytes.length}`,
    );
    expect(partial.headers.get("content-length")).toBe("774");
    expect(
      Buffer.from(await partial.arrayBuffer()).equals(
        bytes.subarray(250, 1024),
      ),
    ).toBe(true);

    const suffix = await fetch(fileUrl, { headers: { Range: "bytes=-7" } });
    expect(suffix.status).toBe(206);
    expect(
      Buffer.from(await suffix.arrayBuffer()).equals(
        bytes.subarray(bytes.length - 7),
      ),
    ).toBe(true);

    // Convex serves a single range only (storage.rs).
    const several = await fetch(fileUrl, {
      headers: { Range: "bytes=0-1,5-6" },
    });
    expect(several.status).toBe(416);
    const pastEnd = await fetch(fileUrl, {
      headers: { Range: `bytes=${bytes.length}-` },
    });
    expect(pastEnd.status).toBe(416);
  });

  test("parseRange clamps open and oversized ranges to the file", () => {
    expect(parseRange("bytes=0-", 10)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=3-100", 10)).toEqual({ start: 3, end: 9 });
    expect(parseRange("bytes=-100", 10)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=5-2", 10)).toBeNull();
    expect(parseRange("items=0-1", 10)).toBeNull();
    expect(parseRange("bytes=0-0", 0)).toBeNull();
  });

  test("_storage holds size, content type and the base64 sha256; getMetadata answers hex", async () => {
    const { client } = await start();
    const bytes = binaryBytes();
    const storageId = await upload(client, bytes, {
      "Content-Type": "application/octet-stream",
    });
    const sha = createHash("sha256").update(bytes);
    const doc = (await client.query(api.files.metadata, {
      storageId,
    })) as Record<string, unknown>;
    expect(doc).toEqual({
      _id: storageId,
      _creationTime: expect.any(Number) as number,
      sha256: sha.copy().digest("base64"),
      size: bytes.length,
      contentType: "application/octet-stream",
    });
    expect(await client.query(api.files.list, {})).toEqual([doc]);

    const untyped = await upload(client, Buffer.from("plain"), {});
    expect(
      (
        (await client.query(api.files.metadata, { storageId: untyped })) as {
          contentType: unknown;
        }
      ).contentType,
    ).toBeNull();

    const fromAction = (await client.action(api.files.storeAndGet, {
      base64: bytes.toString("base64"),
      contentType: "image/webp",
    })) as {
      storageId: string;
      roundTrip: string;
      type: string;
      metadata: Record<string, unknown>;
      url: string;
    };
    expect(Buffer.from(fromAction.roundTrip, "base64").equals(bytes)).toBe(
      true,
    );
    expect(fromAction.type).toBe("image/webp");
    expect(fromAction.metadata).toEqual({
      storageId: fromAction.storageId,
      sha256: sha.digest("hex"),
      size: bytes.length,
      contentType: "image/webp",
    });
    const served = await fetch(fromAction.url);
    expect(Buffer.from(await served.arrayBuffer()).equals(bytes)).toBe(true);
  });

  test("deleting a file makes its URL 404 and its metadata null; a failed mutation deletes nothing", async () => {
    const { client } = await start();
    const storageId = await upload(client, binaryBytes());
    const fileUrl = (await client.query(api.files.getUrl, {
      storageId,
    })) as string;

    await expect(
      client.mutation(api.files.removeThenFail, { storageId }),
    ).rejects.toThrow(/rolled back/);
    expect((await fetch(fileUrl)).status).toBe(200);

    await client.mutation(api.files.remove, { storageId });
    expect((await fetch(fileUrl)).status).toBe(404);
    expect(await client.query(api.files.getUrl, { storageId })).toBeNull();
    expect(await client.query(api.files.metadata, { storageId })).toBeNull();
    const again = await rejection(
      client.mutation(api.files.remove, { storageId }),
    );
    expect(again.message).toContain(`storage id ${storageId} not found`);

    const second = await upload(client, Buffer.from([1, 2, 3]));
    expect(
      await client.action(api.files.deleteFromAction, { storageId: second }),
    ).toBeNull();
    expect(await client.query(api.files.list, {})).toEqual([]);
  });

  test("upload URLs need a valid token, and storage IDs of other tables are refused", async () => {
    const { harness, client } = await start();
    const forged = await fetch(
      `${harness.url}/api/storage/upload?token=1.abc`,
      {
        method: "POST",
        body: "x",
      },
    );
    expect(forged.status).toBe(401);
    const url = (await client.mutation(
      api.files.generateUploadUrl,
      {},
    )) as string;
    const wrongDigest = await fetch(url, {
      method: "POST",
      headers: { Digest: `sha-256=${Buffer.alloc(32).toString("base64")}` },
      body: "x",
    });
    expect(wrongDigest.status).toBe(400);
    expect(((await wrongDigest.json()) as { code: string }).code).toBe(
      "Sha256Mismatch",
    );
    expect(await client.query(api.files.list, {})).toEqual([]);
    const bad = await rejection(
      client.query(api.files.getUrl, { storageId: "not-an-id" }),
    );
    expect(bad.message).toContain('Invalid storage ID: "not-an-id"');
    expect((await fetch(`${harness.url}/api/storage/nonsense`)).status).toBe(
      400,
    );
  });
});

describe("file storage in HTTP actions", () => {
  test("an HTTP action stores a request body and serves it back with its content type", async () => {
    const data = tempDir("files-http");
    const backend = await startBackend({
      functions: FILES_FIXTURE,
      data,
      port: 0,
      sitePort: 0,
      watch: false,
      logger: quietLogger(),
    });
    try {
      const body = "bytes through an HTTP action \u00e9\u0000\u00ff";
      const stored = await fetch(`${backend.siteUrl}/files`, {
        method: "POST",
        headers: { "Content-Type": "text/x-test" },
        body,
      });
      expect(stored.status).toBe(200);
      const { storageId } = (await stored.json()) as { storageId: string };
      const served = await fetch(`${backend.siteUrl}/files?id=${storageId}`);
      expect(served.headers.get("content-type")).toBe("text/x-test");
      expect(await served.text()).toBe(body);
      const client = new ConvexHttpClient(backend.url, { logger: false });
      expect(
        (
          (await client.query(api.files.metadata, { storageId })) as {
            size: number;
          }
        ).size,
      ).toBe(Buffer.byteLength(body));
    } finally {
      await backend.close();
      removeDir(data);
    }
  });
});

describe("file storage durability", () => {
  let child: ChildProcess | null = null;
  const dirs: string[] = [];
  afterEach(async () => {
    if (
      child !== null &&
      child.exitCode === null &&
      child.signalCode === null
    ) {
      const exited = new Promise((resolve) => child!.once("exit", resolve));
      child.kill("SIGKILL");
      await withTimeout(exited, "the backend to exit");
    }
    child = null;
    for (const dir of dirs.splice(0)) removeDir(dir);
  });

  function startCli(
    data: string,
  ): Promise<{ url: string; exited: Promise<unknown> }> {
    const cli = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        path.join(REPO_ROOT, "local-backend/src/cli.ts"),
        "--functions",
        FILES_FIXTURE,
        "--data",
        data,
        "--port",
        "0",
        "--site-port",
        "0",
        "--no-watch",
      ],
      { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    child = cli;
    let stdout = "";
    cli.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    let stderr = "";
    cli.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const exited = new Promise((resolve) => cli.once("exit", resolve));
    return waitFor(
      () => {
        if (cli.exitCode !== null)
          throw new Error(`the backend exited: ${stderr}`);
        const url = /Convex local backend ready at (http:\/\/\S+)/.exec(
          stdout,
        )?.[1];
        return url === undefined ? undefined : { url, exited };
      },
      "the ready line",
      20_000,
    );
  }

  test("an acknowledged upload survives kill -9 with its bytes and metadata", async () => {
    const data = tempDir("files-data");
    dirs.push(data);
    const first = await startCli(data);
    const bytes = binaryBytes();
    const client = new ConvexHttpClient(first.url, { logger: false });
    const storageId = await upload(client, bytes);
    child!.kill("SIGKILL");
    await withTimeout(first.exited, "kill -9");

    const second = await startCli(data);
    const after = new ConvexHttpClient(second.url, { logger: false });
    const fileUrl = (await after.query(api.files.getUrl, {
      storageId,
    })) as string;
    const response = await fetch(fileUrl);
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer()).equals(bytes)).toBe(true);
    expect(
      (
        (await after.query(api.files.metadata, { storageId })) as {
          size: number;
        }
      ).size,
    ).toBe(bytes.length);
  });
});
