/**
 * Where this browser keeps the anonymous session secret, and how it is made.
 *
 * The secret is a random UUID v4; the server turns it into a session and an
 * anonymous user on first use (`api.sessions.start`). Whoever holds it *is*
 * that user, so it is never rendered, logged or posted to other tabs.
 *
 * Two modes, chosen in `config.ts` (`?session=shared|tab`, else
 * `VITE_SESSION_STORAGE=shared|tab`, else "shared"):
 * - "shared": localStorage. Every tab of the browser profile is the same
 *   visitor, across reloads and restarts. When another tab replaces the secret
 *   (a `storage` event), this tab follows it.
 * - "tab": sessionStorage. Each tab is its own visitor; a reload keeps it, a new
 *   tab starts fresh. "Duplicate tab" copies sessionStorage, which would make the
 *   copy silently share the original's identity, so tabs announce a fingerprint
 *   of their secret on a BroadcastChannel and, when two live tabs hold the same
 *   one, the tab opened later makes itself a new secret.
 *
 * Usage:
 *   <SessionProvider useStorage={sessionStorageHook(SESSION_MODE)}
 *     storageKey={SESSION_STORAGE_KEY} idGenerator={generateSessionId}>
 */
import { useCallback, useEffect, useState } from "react";
import type { UseStorage } from "convex-helpers/react/sessions";
import type { SessionId } from "convex-helpers/server/sessions";

export type SessionMode = "shared" | "tab";

const UUID_V4 =
  /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export function isSessionId(value: string): value is SessionId {
  return UUID_V4.test(value);
}

/**
 * A canonical lowercase UUID v4 from `crypto.getRandomValues`.
 * `crypto.randomUUID` exists only in secure contexts, so it is missing when the
 * page is opened over plain http from another machine on the LAN.
 */
export function generateSessionId(): SessionId {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = toHex(bytes);
  return [
    hex.slice(0, 8),
    hex.slice(8, 12),
    hex.slice(12, 16),
    hex.slice(16, 20),
    hex.slice(20),
  ].join("-") as SessionId;
}

export function sessionStorageHook(
  mode: SessionMode,
): UseStorage<SessionId | undefined> {
  switch (mode) {
    case "shared":
      return useSharedSessionId;
    case "tab":
      return useTabSessionId;
    default:
      mode satisfies never;
      throw new Error(`Unknown session mode: ${String(mode)}`);
  }
}

function useSharedSessionId(key: string, initialValue: SessionId | undefined) {
  const [sessionId, setSessionId] = usePersistedId("local", key, initialValue);

  useEffect(() => {
    const onStorage = (event: StorageEvent) => {
      if (event.key !== key || event.storageArea !== openStorage("local")) {
        return;
      }
      if (event.newValue !== null && isSessionId(event.newValue)) {
        setSessionId(event.newValue);
      }
    };
    window.addEventListener("storage", onStorage);
    return () => window.removeEventListener("storage", onStorage);
  }, [key, setSessionId]);

  return [sessionId, setSessionId] as const;
}

function useTabSessionId(key: string, initialValue: SessionId | undefined) {
  const [sessionId, setSessionId] = usePersistedId(
    "session",
    key,
    initialValue,
  );

  useEffect(() => {
    if (typeof BroadcastChannel === "undefined") return;
    // The channel reaches every same-origin document, so it carries a
    // fingerprint that can say "same secret" without revealing the secret.
    const self: TabAnnouncement = {
      type: "hello",
      tab: TAB_ID,
      openedAt: performance.timeOrigin,
      fingerprint: fingerprint(sessionId),
    };
    const channel = new BroadcastChannel(`${key}:tabs`);
    let yielded = false;
    channel.onmessage = (event: MessageEvent<unknown>) => {
      const other = parseAnnouncement(event.data);
      if (
        yielded ||
        other === null ||
        other.tab === self.tab ||
        other.fingerprint !== self.fingerprint
      ) {
        return;
      }
      if (isOpenedBefore(self, other)) {
        if (other.type === "hello")
          channel.postMessage({ ...self, type: "taken" });
      } else {
        yielded = true;
        setSessionId(generateSessionId());
      }
    };
    channel.postMessage(self);
    return () => channel.close();
  }, [key, sessionId, setSessionId]);

  return [sessionId, setSessionId] as const;
}

/** State backed by one storage key; writes follow state, never the render. */
function usePersistedId(
  area: StorageArea,
  key: string,
  initialValue: SessionId | undefined,
) {
  const [sessionId, setState] = useState<SessionId>(() => {
    const stored = readId(openStorage(area), key);
    if (stored !== undefined) return stored;
    return initialValue !== undefined && isSessionId(initialValue)
      ? initialValue
      : generateSessionId();
  });

  useEffect(() => {
    const storage = openStorage(area);
    try {
      storage?.setItem(key, sessionId);
    } catch {
      // Quota exceeded or storage blocked: the secret lasts as long as the page.
    }
  }, [area, key, sessionId]);

  const setSessionId = useCallback((value: SessionId | undefined) => {
    if (value !== undefined && !isSessionId(value)) {
      throw new Error(
        "Session secrets must be lowercase UUID v4 strings; pass idGenerator={generateSessionId} to SessionProvider.",
      );
    }
    setState(value ?? generateSessionId());
  }, []);

  return [sessionId, setSessionId] as const;
}

export type StorageArea = "local" | "session";

/** Reading `localStorage` itself throws when the user blocks site data. */
export function openStorage(area: StorageArea): Storage | null {
  try {
    return area === "local" ? window.localStorage : window.sessionStorage;
  } catch {
    return null;
  }
}

function readId(storage: Storage | null, key: string): SessionId | undefined {
  try {
    const value = storage?.getItem(key);
    return value != null && isSessionId(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

type TabAnnouncement = {
  /** "hello": I use this secret now. "taken": an older tab already uses it. */
  type: "hello" | "taken";
  tab: string;
  openedAt: number;
  fingerprint: string;
};

const TAB_ID = toHex(crypto.getRandomValues(new Uint8Array(8)));

function isOpenedBefore(a: TabAnnouncement, b: TabAnnouncement): boolean {
  return (
    a.openedAt < b.openedAt || (a.openedAt === b.openedAt && a.tab < b.tab)
  );
}

function parseAnnouncement(data: unknown): TabAnnouncement | null {
  if (typeof data !== "object" || data === null) return null;
  const { type, tab, openedAt, fingerprint } = data as Record<string, unknown>;
  if (
    (type === "hello" || type === "taken") &&
    typeof tab === "string" &&
    typeof openedAt === "number" &&
    typeof fingerprint === "string"
  ) {
    return { type, tab, openedAt, fingerprint };
  }
  return null;
}

/** cyrb53 (bryc, public domain): 53 bits, enough to tell secrets apart. */
function fingerprint(value: string): string {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
