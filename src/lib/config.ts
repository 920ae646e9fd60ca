/**
 * Client configuration, read once at start-up.
 *
 * - `VITE_CONVEX_URL` (build time): the Convex deployment. Unset, the page talks
 *   to the embedded local backend on its default port.
 * - Session storage mode: `VITE_SESSION_STORAGE=shared|tab` (build time), which
 *   the page URL's `?session=shared|tab` overrides. See `sessionStorage.ts`.
 */
import type { SessionMode } from "./sessionStorage";

export const LOCAL_BACKEND_URL = "http://127.0.0.1:3210";

export const CONVEX_URL: string =
  import.meta.env.VITE_CONVEX_URL || LOCAL_BACKEND_URL;

/** Key of the session secret in localStorage ("shared") or sessionStorage ("tab"). */
export const SESSION_STORAGE_KEY = "chat-session-id";

function parseSessionMode(value: string): SessionMode | undefined {
  return value === "shared" || value === "tab" ? value : undefined;
}

function resolveSessionMode(): SessionMode {
  const fromUrl = new URLSearchParams(window.location.search).get("session");
  if (fromUrl !== null) {
    const mode = parseSessionMode(fromUrl);
    if (mode) return mode;
    console.warn(
      `Ignoring ?session=${fromUrl}: use ?session=shared or ?session=tab.`,
    );
  }
  const fromBuild = import.meta.env.VITE_SESSION_STORAGE;
  if (fromBuild) {
    const mode = parseSessionMode(fromBuild);
    if (!mode) {
      throw new Error(
        `VITE_SESSION_STORAGE is "${fromBuild}": set it to "shared" or "tab", or leave it unset.`,
      );
    }
    return mode;
  }
  return "shared";
}

export const SESSION_MODE: SessionMode = resolveSessionMode();
