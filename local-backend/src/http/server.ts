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
import type { FunctionRunner } from "../functions/functionRunner.ts";
import type { FileStorage } from "../functions/fileStorage.ts";
import { httpFunctionResponse } from "../sync/outcomes.ts";
import type { SubscriptionHub } from "../sync/subscriptions.ts";
import {
  BodyTooLargeError,
  corsHeaders,
  createRouter,
  isLoopbackHost,
  MAX_BODY_BYTES,
  normalizePath,
  readBody,
  readBodyBytes,
  type Route,
  type RouteRequest,
  sendJson,
} from "./router.ts";
import { storageRoutes } from "./storageRoutes.ts";
import { serveSyncSocket, type SyncSocketOptions } from "./syncSocket.ts";

const SYNC_PATH = /^\/api\/[^/]+\/sync$/;

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
  const authenticator = options.authenticator ?? anonymousOnly();
  const dispatch = createRouter([
    {
      method: "GET",
      path: "/instance_name",
      handle: instanceName(options.instanceName),
    },
    ...(options.files === undefined ? [] : storageRoutes(options.files)),
    ...functionRoutes(options.runner, authenticator),
  ]);
  const sockets = new Set<WebSocket>();
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_BODY_BYTES,
    perMessageDeflate: false,
  });

  const server = http.createServer((req, res) => {
    const serve = async () => {
      if (options.loopbackOnly && !isLoopbackHost(req.headers.host)) {
        sendJson(res, 403, LOOPBACK_REFUSAL, req);
        return;
      }
      if (req.method === "OPTIONS") preflight(req, res);
      else await dispatch(req, res, normalizePath(req.url ?? "/"));
    };
    serve().catch((error: unknown) => {
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

  server.on("upgrade", (req, socket, head) => {
    // Node takes its own `error` listener off the socket before it emits
    // `upgrade`; `ws` adds one for the sockets it takes, and a refused one
    // needs its own, or a client's reset (ECONNRESET) is an unhandled
    // 'error' event that ends the process.
    socket.on("error", () => socket.destroy());
    const pathname = normalizePath(req.url ?? "/");
    const refuse = (status: number, reason: string) => {
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n${reason}\n`,
      );
    };
    if (options.loopbackOnly && !isLoopbackHost(req.headers.host)) {
      refuse(403, LOOPBACK_REFUSAL.message);
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
      serveSyncSocket(ws, options.hub, { ...options.sync, authenticator });
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

const LOOPBACK_REFUSAL = {
  code: "Forbidden",
  message: "Host header must name localhost or 127.0.0.1",
};

/** CORS preflight, for pages served from other origins (any path). */
function preflight(req: http.IncomingMessage, res: http.ServerResponse): void {
  res.writeHead(204, {
    ...corsHeaders(req),
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers":
      "Content-Type, Convex-Client, Authorization, Digest",
    "Access-Control-Max-Age": "86400",
  });
  res.end();
}

/** `GET /instance_name`: what the Convex CLI probes to find a local backend. */
function instanceName(name: string): Route["handle"] {
  return ({ req, res }) => {
    res.writeHead(200, {
      "Content-Type": "text/plain; charset=utf-8",
      ...corsHeaders(req),
    });
    res.end(name);
  };
}

/**
 * `POST /api/query|mutation|action|function` (`ConvexHttpClient`) and
 * `POST /api/run/<module path>/<name>` (Convex's public HTTP API).
 */
function functionRoutes(
  runner: FunctionRunner,
  authenticator: Authenticator,
): Route[] {
  const call = async (
    { req, res }: RouteRequest,
    named: string,
    runPath?: string,
  ) => {
    const identity = await identityOf(authenticator, req, res);
    if (identity === null) return;
    const body = await readCallBody(req, res, runPath);
    if (body === null) return;
    // `/api/function` and `/api/run` run whatever the path names; an unknown
    // path runs as a query to get Convex's not-found error.
    const kind =
      named === "function"
        ? (runner.functionKind(body.path) ?? "query")
        : named;
    const request = { ...body, identity };
    const outcome =
      kind === "query"
        ? await runner.runQuery(request)
        : kind === "mutation"
          ? await runner.runMutation(request)
          : await runner.runAction(request);
    const answer = httpFunctionResponse(outcome);
    sendJson(res, answer.status, answer.body, req);
  };
  return [
    {
      method: "POST",
      path: /^\/api\/(query|mutation|action|function)$/,
      handle: (request) => call(request, request.captures[0]!),
    },
    {
      method: "POST",
      path: /^\/api\/run\/(.+)$/,
      // `/api/run/messages/list` names "messages:list".
      handle: (request) =>
        call(
          request,
          "function",
          request.captures[0]!.replace(/\/([^/]+)$/, ":$1"),
        ),
    },
  ];
}

/** The caller's identity, or null once a refused credential has been answered. */
async function identityOf(
  authenticator: Authenticator,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<Identity | null> {
  try {
    return await authenticator.fromHeader(req.headers.authorization);
  } catch (error) {
    if (!(error instanceof AuthenticationError)) throw error;
    sendAuthError(res, error, req);
    return null;
  }
}

type CallBody = { path: string; args: JSONValue; componentPath?: string };

/**
 * `{path, args, format?, componentPath?}`, or null once a bad body has been
 * answered. `runPath`, from an `/api/run/…` URL, overrides `path`.
 */
async function readCallBody(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  runPath: string | undefined,
): Promise<CallBody | null> {
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
    return null;
  }
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
    return null;
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
    return null;
  }
  return {
    path: body.path,
    // The real backend accepts args as `[obj]` or `obj` (`UdfArgsJson`).
    args: (body.args ?? {}) as JSONValue,
    // `/api/function` names the component (`ConvexHttpClient.function`).
    ...(typeof body.componentPath === "string"
      ? { componentPath: body.componentPath }
      : {}),
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
