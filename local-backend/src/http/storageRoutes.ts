/**
 * File storage over HTTP on the deployment port, as convex-backend's
 * `local_backend/src/storage.rs` serves it:
 * - `POST /api/storage/upload?token=…`: one body of any bytes (streamed to
 *   disk, never buffered whole) -> `{"storageId": …}`; the `Content-Type`
 *   header becomes the file's content type, a `Digest: sha-256=<base64>`
 *   header is checked against the bytes;
 * - `GET /api/storage/<uuid>`: the bytes with their content type, `Digest`,
 *   a month of private caching, and a single `Range` (Convex serves one range
 *   only and answers 416 to several).
 *
 * Usage: `createRouter([...storageRoutes(files), ...])` (router.ts).
 */
import type http from "node:http";
import { pipeline } from "node:stream/promises";
import { type FileStorage, StorageError } from "../functions/fileStorage.ts";
import { corsHeaders, type Route, sendJson } from "./router.ts";

/** convex-backend `storage.rs` `MAX_CACHE_AGE`: stored files never change. */
const CACHE_CONTROL = "private, max-age=2592000";
const FILE_PATH = /^\/api\/storage\/(?!upload$)([^/]+)$/;

/** `POST /api/storage/upload` and `GET|HEAD /api/storage/<uuid>`, for the route table. */
export function storageRoutes(files: FileStorage): Route[] {
  return [
    {
      method: "POST",
      path: "/api/storage/upload",
      handle: ({ req, res }) => upload(files, req, res),
    },
    {
      method: ["GET", "HEAD"],
      path: FILE_PATH,
      handle: ({ req, res, captures }) =>
        download(files, decodeURIComponent(captures[0]!), req, res),
    },
  ];
}

async function upload(
  files: FileStorage,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  try {
    const token = new URL(req.url ?? "/", "http://x").searchParams.get("token");
    files.checkUploadToken(token);
    const contentType = req.headers["content-type"];
    const storageId = await files.store(
      req,
      contentType === undefined || contentType === "" ? null : contentType,
      digestOf(req.headers.digest),
    );
    sendJson(res, 200, { storageId }, req);
  } catch (error) {
    // The rest of a refused body is not worth reading.
    req.resume();
    sendError(res, req, error);
  }
}

async function download(
  files: FileStorage,
  uuid: string,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const file = files.lookupUuid(uuid);
  if (file === null) {
    if (!/^[0-9a-f-]{36}$/i.test(uuid)) {
      sendError(
        res,
        req,
        new StorageError(
          "InvalidStoragePath",
          `Invalid storage path: "${uuid}". Please use \`storage.getUrl()\` to generate a valid URL to retrieve files. See https://docs.convex.dev/file-storage/serve-files for more details`,
          400,
        ),
      );
    } else {
      sendError(
        res,
        req,
        new StorageError("FileNotFound", "File not found", 404),
      );
    }
    return;
  }
  const headers: Record<string, string | number> = {
    "Cache-Control": CACHE_CONTROL,
    "Accept-Ranges": "bytes",
    ...corsHeaders(req),
  };
  if (file.contentType !== null) headers["Content-Type"] = file.contentType;
  const rangeHeader = req.headers.range;
  if (rangeHeader !== undefined) {
    const range = parseRange(rangeHeader, file.size);
    if (range === null) {
      res.writeHead(416, {
        "Content-Range": `bytes */${file.size}`,
        ...corsHeaders(req),
      });
      res.end();
      return;
    }
    res.writeHead(206, {
      ...headers,
      "Content-Range": `bytes ${range.start}-${range.end}/${file.size}`,
      "Content-Length": range.end - range.start + 1,
    });
    if (req.method === "HEAD") res.end();
    else await send(files.readStream(file, range), res);
    return;
  }
  res.writeHead(200, {
    ...headers,
    Digest: `sha-256=${file.sha256}`,
    "Content-Length": file.size,
  });
  if (req.method === "HEAD" || file.size === 0) res.end();
  else await send(files.readStream(file), res);
}

/** Streams bytes to the client; a client that hangs up early is not an error. */
async function send(
  stream: NodeJS.ReadableStream,
  res: http.ServerResponse,
): Promise<void> {
  try {
    await pipeline(stream, res);
  } catch (error) {
    if ((error as { code?: string }).code !== "ERR_STREAM_PREMATURE_CLOSE")
      throw error;
  }
}

/**
 * One `bytes=` range clamped to the file, or null when it cannot be served:
 * several ranges (Convex serves one, as S3 does), a malformed header, or a
 * start past the end.
 */
export function parseRange(
  header: string,
  size: number,
): { start: number; end: number } | null {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (match === null) return null;
  const [, first, last] = match;
  let start: number;
  let end: number;
  if (first === "") {
    if (last === "") return null;
    const suffix = Number(last);
    if (suffix === 0) return null;
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(first);
    end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
    if (last !== "" && Number(last) < start) return null;
  }
  if (start >= size || end < start) return null;
  return { start, end };
}

/** `Digest: sha-256=<base64>` (RFC 3230), as the upload route reads it. */
function digestOf(header: string | string[] | undefined): Buffer | undefined {
  if (header === undefined) return undefined;
  if (Array.isArray(header)) header = header.join(",");
  const match = /(?:^|,)\s*sha-256=([A-Za-z0-9+/=]+)/i.exec(header);
  if (match === null) {
    throw new StorageError(
      "BadHeader",
      `Bad header for Digest: expected sha-256=<base64>`,
      400,
    );
  }
  return Buffer.from(match[1], "base64");
}

function sendError(
  res: http.ServerResponse,
  req: http.IncomingMessage,
  error: unknown,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (error instanceof StorageError) {
    sendJson(
      res,
      error.status,
      { code: error.code, message: error.message },
      req,
    );
    return;
  }
  console.error("local backend: storage request failed:", error);
  sendJson(
    res,
    500,
    { code: "InternalServerError", message: "Internal server error" },
    req,
  );
}
