/**
 * One sync WebSocket: connects a `ws` socket to its `SyncSession` and keeps
 * the backend safe from the socket.
 *
 * - Liveness. Every `heartbeatMs` the socket is sent a WebSocket ping; one that
 *   has sent no pong and no message since the previous ping is dead (a
 *   half-open TCP connection: a laptop that slept, a network that dropped) and
 *   is terminated, which disposes its session and releases its subscriptions.
 *   So a dead client is dropped between one and two intervals after its last
 *   sign of life: 20 to 40 s with the default. (convex-backend drops a peer
 *   after 120 s without a pong, `crates/local_backend/src/subs/mod.rs`
 *   `CLIENT_TIMEOUT`; we are stricter so a dead page stops costing re-runs
 *   within a minute.)
 * - Send buffer. Transitions are single-flight (`syncSession.ts`), so a slow
 *   reader only holds a bounded backlog; what else it makes us send (answers
 *   to its own mutations and actions) is capped too: past `maxSendBufferBytes`
 *   waiting in the socket's buffer it is closed with a reason, and its memory
 *   is freed as the close completes.
 *
 * Usage:
 *   wss.handleUpgrade(req, socket, head, (ws) => serveSyncSocket(ws, hub, {}));
 */
import type { Socket } from "node:net";
import type { WebSocket } from "ws";
import type { Authenticator } from "../functions/authentication.ts";
import type { SubscriptionHub } from "../sync/subscriptions.ts";
import { SyncSession } from "../sync/syncSession.ts";

export const HEARTBEAT_MS = 20_000;
/** Room for two Transitions of Convex's largest result (16 MiB) and then some. */
export const MAX_SEND_BUFFER_BYTES = 64 * 1024 * 1024;
/** "Try again later": the client reconnects with backoff. */
const CLOSE_TRY_AGAIN_LATER = 1013;
/** Frames come as strings or as Buffers (shared Transitions); both are JSON text. */
const TEXT_FRAME = { binary: false };
/** A text message's fragment other than its last (`Frame`). */
const TEXT_FRAGMENT = { binary: false, fin: false };

export type SyncSocketOptions = {
  /** WebSocket ping interval; a socket silent for a whole interval after a ping is dropped. */
  heartbeatMs?: number;
  /** Bytes that may wait in one socket's send buffer before it is closed. */
  maxSendBufferBytes?: number;
  /** Verifies the socket's `Authenticate` messages. */
  authenticator?: Authenticator;
};

export function serveSyncSocket(
  ws: WebSocket,
  hub: SubscriptionHub,
  options: SyncSocketOptions,
): void {
  const maxBuffered = options.maxSendBufferBytes ?? MAX_SEND_BUFFER_BYTES;
  const coalesce = frameCoalescer(ws);
  const session = new SyncSession(
    hub,
    {
      send: (frame, written) => {
        if (ws.readyState !== ws.OPEN) return;
        // Checked before sending more, so one large frame to a client that
        // reads is fine; a backlog the client never drains is not.
        if (ws.bufferedAmount > maxBuffered) {
          ws.close(
            CLOSE_TRY_AGAIN_LATER,
            `SendBufferFull: over ${maxBuffered} bytes wait to be sent; the client is not reading`,
          );
          session.dispose();
          return;
        }
        coalesce.cork();
        const done = written === undefined ? undefined : () => written();
        if (typeof frame === "string" || Buffer.isBuffer(frame)) {
          ws.send(frame, TEXT_FRAME, done);
          return;
        }
        // `ws` starts a message at a fragment after one sent with `fin`.
        const last = frame.length - 1;
        frame.forEach((fragment, i) =>
          i < last
            ? ws.send(fragment, TEXT_FRAGMENT)
            : ws.send(fragment, TEXT_FRAME, done),
        );
      },
      flush: () => coalesce.flush(),
      close: (code, reason) => ws.close(code, reason),
    },
    options.authenticator ?? null,
  );

  let alive = true;
  const heartbeat = setInterval(() => {
    if (!alive) {
      ws.terminate();
      return;
    }
    alive = false;
    ws.ping();
  }, options.heartbeatMs ?? HEARTBEAT_MS);
  heartbeat.unref();
  const end = () => {
    clearInterval(heartbeat);
    session.dispose();
  };

  ws.on("pong", () => {
    alive = true;
  });
  ws.on("message", (data, isBinary) => {
    alive = true;
    if (isBinary) {
      ws.close(4000, "Binary frames are not part of the Convex sync protocol");
      end();
      return;
    }
    try {
      session.receive(
        Buffer.isBuffer(data)
          ? data.toString("utf8")
          : Buffer.concat(
              Array.isArray(data) ? data : [Buffer.from(data)],
            ).toString("utf8"),
      );
    } catch (error) {
      console.error("local backend: sync message failed:", error);
      ws.close(1011, "InternalServerError");
      end();
    }
  });
  ws.on("close", end);
  ws.on("error", end);
}

/**
 * Frames sent together leave in one write: the socket is corked at the first
 * and uncorked by `flush` (the session's, after a burst of frames) or else on
 * the next tick (`ws` corks each frame's header and payload the same way,
 * `sender.js` `sendFrame`; corks nest). A commit that becomes durable
 * releases a MutationResponse and the Transition after it together, and each
 * write is a syscall (a few percent of a mutation's CPU under 50 writers).
 */
function frameCoalescer(ws: WebSocket): { cork(): void; flush(): void } {
  let corked: Socket | null = null;
  const flush = () => {
    const socket = corked;
    if (socket === null) return;
    corked = null;
    socket.uncork();
  };
  return {
    cork: () => {
      // `_socket`: the underlying net.Socket, which `ws` does not expose otherwise.
      const socket = (ws as unknown as { _socket: Socket | null })._socket;
      if (corked !== null || socket === null) return;
      corked = socket;
      socket.cork();
      process.nextTick(flush);
    },
    flush,
  };
}
