/**
 * The backend's HTTP surface on the deployment ("cloud") port:
 * - `GET /instance_name`, which the Convex CLI probes to find a local backend;
 * - `POST /api/query|mutation|action|function`, the `ConvexHttpClient` API
 *   (convex 1.48 `http_client.ts`; `/api/function` is what `npx convex run`
 *   calls), and `POST /api/run/<module path>/<name>`, Convex's public HTTP API,
 *   with CORS for pages served from other origins;
 * - `Authorization: Bearer <jwt>` or `Convex <admin key>` on all of them;
 * - the WebSocket upgrade on `/api/<client version>/sync`.
 *
 * When bound to loopback, requests must name a loopback host in `Host`, so a web
 * page cannot reach the backend through DNS rebinding (as Vite's dev server
 * checks its WebSocket upgrades).
 */
import http from "node:http";
import { WebSocketServer, type WebSocket } from "ws";
import type { JSONValue } from "convex/values";
import {
  ANONYMOUS,
  AuthenticationError,
  Authenticator,
  type Identity,
  TokenVerifier,
} from "../functions/authentication.ts";
import type {
  FunctionOutcome,
  FunctionRunner,
} from "../functions/functionRunner.ts";
import type { FileStorage } from "../functions/fileStorage.ts";
import { serveStorage } from "./storageRoutes.ts";
import type { SubscriptionHub } from "../sync/subscriptions.ts";
import { serveSyncSocket, type SyncSocketOptions } from "./syncSocket.ts";
import { MAX_FRAME_BYTES } from "../sync/protocol.ts";

/** The same bound as a sync frame: calls over Convex's 16 MiB argument limit still get its error. */
const MAX_BODY_BYTES = MAX_FRAME_BYTES;
/** convex 1.48 `http_client.ts` `STATUS_CODE_UDF_FAILED`. */
const STATUS_UDF_FAILED = 560;
const SYNC_PATH = /^\/api\/[^/]+\/sync$/;
const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

export type HttpServerOptions = {
  hub: SubscriptionHub;
  runner: FunctionRunner;
  /** Checks `Authorization` and sync `Authenticate`; by default only anonymous calls pass. */
  authenticator?: Authenticator;
  instanceName: string;
  /** Enforce loopback `Host` headers (when listening on a loopback address). */
  loopbackOnly: boolean;
  /** Upload and download routes under `/api/storage/` (http/storageRoutes.ts). */
  files?: FileStorage;
  /** Heartbeat and send-buffer limits of sync sockets (tests shorten them). */
  sync?: SyncSocketOptions;
};

export type ApiServer = {
  server: http.Server;
  /** Closes every sync socket with "going away"; clients reconnect to the next backend. */
  closeSockets(): void;
};

export function createApiServer(options: HttpServerOptions): ApiServer {
  const { hub, runner } = options;
  const authenticator = options.authenticator ?? anonymousOnly();
  const sockets = new Set<WebSocket>();
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_BODY_BYTES,
    perMessageDeflate: false,
  });

  const server = http.createServer((req, res) => {
    handleRequest(req, res).catch((error: unknown) => {
      console.error("local backend: request failed:", error);
      if (!res.headersSent)
        sendJson(
          res,
          500,
          { code: "InternalServerError", message: "Internal server error" },
          req,
        );
      else res.destroy();
    });
  });

  async function handleRequest(
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<void> {
    if (options.loopbackOnly && !isLoopbackHost(req.headers.host)) {
      sendJson(
        res,
        403,
        {
          code: "Forbidden",
          message: "Host header must name localhost or 127.0.0.1",
        },
        req,
      );
      return;
    }
    const pathname = normalizePath(req.url ?? "/");
    if (req.method === "OPTIONS") {
      res.writeHead(204, {
        ...corsHeaders(req),
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers":
          "Content-Type, Convex-Client, Authorization, Digest",
        "Access-Control-Max-Age": "86400",
      });
      res.end();
      return;
    }
    if (req.method === "GET" && pathname === "/instance_name") {
      res.writeHead(200, {
        "Content-Type": "text/plain; charset=utf-8",
        ...corsHeaders(req),
      });
      res.end(options.instanceName);
      return;
    }
    if (
      options.files !== undefined &&
      pathname.startsWith("/api/storage/") &&
      (await serveStorage(options.files, req, res, pathname))
    )
      return;
    const route =
      /^\/api\/(?:(query|mutation|action|function)|run\/(.+))$/.exec(pathname);
    if (route === null) {
      sendJson(
        res,
        404,
        { code: "NotFound", message: `No route for ${req.method} ${pathname}` },
        req,
      );
      return;
    }
    if (req.method !== "POST") {
      sendJson(
        res,
        405,
        { code: "MethodNotAllowed", message: `Use POST for ${pathname}` },
        req,
      );
      return;
    }
    let identity: Identity;
    try {
      identity = await authenticator.fromHeader(req.headers.authorization);
    } catch (error) {
      if (!(error instanceof AuthenticationError)) throw error;
      sendAuthError(res, error, req);
      return;
    }
    let body: {
      path?: unknown;
      args?: unknown;
      format?: unknown;
      componentPath?: unknown;
    };
    try {
      body = JSON.parse(await readBody(req)) as typeof body;
    } catch (error) {
      const tooLarge = error instanceof BodyTooLargeError;
      sendJson(
        res,
        tooLarge ? 413 : 400,
        {
          code: tooLarge ? "PayloadTooLarge" : "BadJsonBody",
          message: tooLarge
            ? `Request body is larger than ${MAX_BODY_BYTES} bytes`
            : "Request body is not valid JSON",
        },
        req,
      );
      return;
    }
    // `/api/run/messages/list` names "messages:list" (Convex's public HTTP API).
    const runPath =
      route[2] === undefined
        ? undefined
        : route[2].replace(/\/([^/]+)$/, ":$1");
    if (runPath !== undefined && typeof body === "object" && body !== null)
      body.path = runPath;
    if (
      typeof body !== "object" ||
      body === null ||
      typeof body.path !== "string"
    ) {
      sendJson(
        res,
        400,
        {
          code: "BadRequest",
          message: 'Request body must be {"path": string, "args": [object]}',
        },
        req,
      );
      return;
    }
    if (
      body.format !== undefined &&
      body.format !== "convex_encoded_json" &&
      body.format !== "json"
    ) {
      sendJson(
        res,
        400,
        {
          code: "BadRequest",
          message: `Unsupported format ${JSON.stringify(body.format)}`,
        },
        req,
      );
      return;
    }
    // The real backend accepts args as `[obj]` or `obj` (`UdfArgsJson`).
    const args = (body.args ?? {}) as JSONValue;
    const named = route[1] ?? "function";
    // `/api/function` and `/api/run` run whatever the path names; an unknown
    // path runs as a query to get Convex's not-found error.
    const kind =
      named === "function"
        ? (runner.functionKind(body.path) ?? "query")
        : named;
    // `/api/function` names the component (`ConvexHttpClient.function`).
    const componentPath =
      typeof body.componentPath === "string" ? body.componentPath : undefined;
    const request = { path: body.path, args, identity, componentPath };
    const outcome: FunctionOutcome =
      kind === "query"
        ? await runner.runQuery(request)
        : kind === "mutation"
          ? await runner.runMutation(request)
          : await runner.runAction(request);
    if (outcome.status === "success") {
      sendJson(
        res,
        200,
        { status: "success", value: outcome.value, logLines: outcome.logLines },
        req,
      );
    } else {
      sendJson(
        res,
        STATUS_UDF_FAILED,
        {
          status: "error",
          errorMessage: outcome.errorMessage,
          ...(outcome.errorData !== undefined
            ? { errorData: outcome.errorData }
            : {}),
          logLines: outcome.logLines,
        },
        req,
      );
    }
  }

  server.on("upgrade", (req, socket, head) => {
    const pathname = normalizePath(req.url ?? "/");
    const refuse = (status: number, reason: string) => {
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n${reason}\n`,
      );
    };
    if (options.loopbackOnly && !isLoopbackHost(req.headers.host)) {
      refuse(403, "Host header must name localhost or 127.0.0.1");
      return;
    }
    if (!SYNC_PATH.test(pathname)) {
      refuse(
        404,
        `No WebSocket endpoint at ${pathname}; the sync endpoint is /api/<version>/sync`,
      );
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      ws.on("close", () => sockets.delete(ws));
      serveSyncSocket(ws, hub, { ...options.sync, authenticator });
    });
  });

  return {
    server,
    closeSockets() {
      for (const ws of sockets) ws.close(1001, "Backend shutting down");
      wss.close();
    },
  };
}

/**
 * The site origin (`CONVEX_SITE_URL`): HTTP actions routed by `convex/http.ts`.
 * Requests and responses are the web platform's, as on Convex.
 */
export function createSiteServer(options: {
  runner: FunctionRunner;
  authenticator?: Authenticator;
  loopbackOnly: boolean;
}): http.Server {
  const authenticator = options.authenticator ?? anonymousOnly();
  return http.createServer((req, res) => {
    const serve = async () => {
      if (options.loopbackOnly && !isLoopbackHost(req.headers.host)) {
        res
          .writeHead(403, { "Content-Type": "text/plain" })
          .end("Host header must name localhost or 127.0.0.1\n");
        return;
      }
      const hasBody = req.method !== "GET" && req.method !== "HEAD";
      const body = hasBody ? await readBodyBytes(req) : undefined;
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers)) {
        if (typeof value === "string") headers.set(name, value);
        else if (Array.isArray(value))
          for (const v of value) headers.append(name, v);
      }
      const request = new Request(
        `http://${req.headers.host ?? "127.0.0.1"}${req.url ?? "/"}`,
        {
          method: req.method ?? "GET",
          headers,
          ...(body !== undefined ? { body } : {}),
        },
      );
      // A refused token does not stop an HTTP action: `getUserIdentity()`
      // throws the refusal instead (convex-backend `Identity::Unknown(Some(..))`).
      let identity: Identity = ANONYMOUS;
      try {
        identity = await authenticator.fromHeader(req.headers.authorization);
      } catch (error) {
        if (!(error instanceof AuthenticationError)) throw error;
        identity = { type: "invalid", error };
      }
      const response = await options.runner.runHttpAction(request, identity);
      // Set-Cookie may repeat; every other header is one comma-joined value.
      const responseHeaders: [string, string][] = [];
      for (const [name, value] of response.headers) {
        if (name !== "set-cookie") responseHeaders.push([name, value]);
      }
      for (const cookie of response.headers.getSetCookie())
        responseHeaders.push(["set-cookie", cookie]);
      res.writeHead(response.status, responseHeaders.flat());
      res.end(Buffer.from(await response.arrayBuffer()));
    };
    serve().catch((error: unknown) => {
      if (error instanceof BodyTooLargeError) {
        if (!res.headersSent) res.writeHead(413, { Connection: "close" }).end();
        return;
      }
      console.error("local backend: HTTP action failed:", error);
      if (!res.headersSent)
        res
          .writeHead(500, { "Content-Type": "text/plain" })
          .end("Internal server error\n");
      else res.destroy();
    });
  });
}

/** "//api//1.48.0/sync?x" → "/api/1.48.0/sync" (a trailing slash in the deployment URL doubles them). */
function normalizePath(url: string): string {
  const pathname = url.split("?")[0].replace(/\/{2,}/g, "/");
  return pathname.length > 1 ? pathname.replace(/\/$/, "") : pathname;
}

function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  const name = host.startsWith("[")
    ? host.slice(0, host.indexOf("]") + 1)
    : host.split(":")[0];
  return LOOPBACK_HOSTS.has(name.toLowerCase());
}

function corsHeaders(req: http.IncomingMessage): Record<string, string> {
  const origin = req.headers.origin;
  return origin === undefined
    ? {}
    : { "Access-Control-Allow-Origin": origin, Vary: "Origin" };
}

function sendJson(
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

/** No providers and no admin key: every credential is refused. */
function anonymousOnly(): Authenticator {
  return new Authenticator(new TokenVerifier(), "");
}

/** Convex answers a refused credential with 401 and `{code, message}` (`ErrorMetadata::unauthenticated`). */
function sendAuthError(
  res: http.ServerResponse,
  error: AuthenticationError,
  req: http.IncomingMessage,
): void {
  sendJson(
    res,
    error.kind === "badRequest" ? 400 : 401,
    { code: error.code, message: error.message },
    req,
  );
}

class BodyTooLargeError extends Error {}

function readBody(req: http.IncomingMessage): Promise<string> {
  return readBodyBytes(req).then((bytes) => bytes.toString("utf8"));
}

/** The request body as sent: HTTP actions get bytes, never text decoded on the way. */
function readBodyBytes(req: http.IncomingMessage): Promise<Buffer> {
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
