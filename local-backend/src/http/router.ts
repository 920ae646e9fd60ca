/**
 * The HTTP plumbing the backend's routes share: a route table dispatcher
 * (`(method, path) -> handler`, in the manner of Vite's dev-server
 * middlewares), JSON answers with CORS, bounded body reads, path
 * normalization and the loopback `Host` check.
 *
 * Usage:
 *   const dispatch = createRouter([
 *     { method: "GET", path: "/instance_name", handle: ({ res }) => res.end(name) },
 *     { method: "POST", path: /^\/api\/run\/(.+)$/, handle: runFunction },
 *   ]);
 *   await dispatch(req, res, normalizePath(req.url ?? "/"));
 */
import type http from "node:http";
import { MAX_FRAME_BYTES } from "../sync/protocol.ts";

/** The same bound as a sync frame: calls over Convex's 16 MiB argument limit still get its error. */
export const MAX_BODY_BYTES = MAX_FRAME_BYTES;
const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

export type RouteRequest = {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  pathname: string;
  /** A RegExp path's capture groups, in order (none for an exact path). */
  captures: readonly (string | undefined)[];
};

export type Route = {
  /** One method, several, or "*" for any. */
  method: string | readonly string[];
  /** An exact path, or a pattern tested against the whole normalized path. */
  path: string | RegExp;
  handle: (request: RouteRequest) => void | Promise<void>;
};

/**
 * Runs the first route whose path and method match. A path that some route
 * serves under other methods is a 405 naming them; any other path is a 404.
 */
export function createRouter(
  routes: readonly Route[],
): (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  pathname: string,
) => Promise<void> {
  return async (req, res, pathname) => {
    const allowed: string[] = [];
    for (const route of routes) {
      const captures = matchPath(route.path, pathname);
      if (captures === null) continue;
      const methods =
        typeof route.method === "string" ? [route.method] : route.method;
      if (methods.includes("*") || methods.includes(req.method ?? "GET")) {
        await route.handle({ req, res, pathname, captures });
        return;
      }
      allowed.push(...methods);
    }
    if (allowed.length > 0)
      sendJson(
        res,
        405,
        {
          code: "MethodNotAllowed",
          message: `Use ${allowed.join(" or ")} for ${pathname}`,
        },
        req,
      );
    else
      sendJson(
        res,
        404,
        {
          code: "NotFound",
          message: `No route for ${req.method} ${pathname}`,
        },
        req,
      );
  };
}

function matchPath(
  path: string | RegExp,
  pathname: string,
): (string | undefined)[] | null {
  if (typeof path === "string") return path === pathname ? [] : null;
  const match = path.exec(pathname);
  return match === null ? null : match.slice(1);
}

/** "//api//1.48.0/sync?x" → "/api/1.48.0/sync" (a trailing slash in the deployment URL doubles them). */
export function normalizePath(url: string): string {
  const pathname = url.split("?")[0].replace(/\/{2,}/g, "/");
  return pathname.length > 1 ? pathname.replace(/\/$/, "") : pathname;
}

export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  const name = host.startsWith("[")
    ? host.slice(0, host.indexOf("]") + 1)
    : host.split(":")[0];
  return LOOPBACK_HOSTS.has(name.toLowerCase());
}

/**
 * The request's origin mirrored, with credentials allowed, as convex-backend's
 * `cors_layer` (`AllowOrigin::mirror_request()`, `allow_credentials(true)`):
 * a page's `navigator.sendBeacon` to `/api/mutation` is a credentialed
 * request, and its preflight fails without the second header.
 */
export function corsHeaders(req: http.IncomingMessage): Record<string, string> {
  const origin = req.headers.origin;
  return origin === undefined
    ? {}
    : {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        Vary: "Origin",
      };
}

export function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  req: http.IncomingMessage,
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
    // After a 413 the rest of the body is not worth reading: close once answered.
    ...(status === 413 ? { Connection: "close" } : {}),
    ...corsHeaders(req),
  });
  res.end(text);
}

export class BodyTooLargeError extends Error {}

export function readBody(req: http.IncomingMessage): Promise<string> {
  return readBodyBytes(req).then((bytes) => bytes.toString("utf8"));
}

/** The request body as sent: HTTP actions get bytes, never text decoded on the way. */
export function readBodyBytes(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        // Answer 413 now and let the rest of the body drain (discarded):
        // destroying the request would reset the connection before the
        // client reads the answer.
        chunks.length = 0;
        reject(new BodyTooLargeError());
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}
