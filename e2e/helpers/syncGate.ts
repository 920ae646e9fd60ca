/**
 * Sits on a page's Convex sync WebSocket (Playwright's `routeWebSocket`) and
 * can hold back what the backend sends, so a test sees what the page shows
 * before the server has answered: an optimistic update, for instance.
 *
 * ```ts
 * const gate = new SyncGate();
 * await gate.attach(page); // before page.goto
 * gate.hold();
 * ... the page acts on its own ...
 * gate.release();
 * ```
 */
import type { Page, WebSocketRoute } from "playwright-core";

/** The Convex client's sync endpoint (convex 1.48 `web_socket_manager.ts`). */
const SYNC_URL = /\/api\/[^/]+\/sync$/;

type Frame = string | Buffer;

export class SyncGate {
  #holding = false;
  readonly #held: { route: WebSocketRoute; frame: Frame }[] = [];

  /** Routes `page`'s sync sockets, including reconnections, through this gate. */
  async attach(page: Page): Promise<void> {
    await page.routeWebSocket(SYNC_URL, (route) => {
      // Frames from the page still go straight through; only the server's
      // side is intercepted.
      const server = route.connectToServer();
      server.onMessage((frame) => this.#deliver(route, frame));
    });
  }

  /** From now on, keep the backend's frames away from the page. */
  hold(): void {
    this.#holding = true;
  }

  /** Delivers the held frames in order, then lets new ones through. */
  release(): void {
    this.#holding = false;
    for (const { route, frame } of this.#held.splice(0)) route.send(frame);
  }

  get heldFrames(): number {
    return this.#held.length;
  }

  #deliver(route: WebSocketRoute, frame: Frame): void {
    if (this.#holding) this.#held.push({ route, frame });
    else route.send(frame);
  }
}
