/**
 * The e-mail address this browser last signed in with, so the sign-in form
 * can offer it again after a plain "Sign out". "Sign out and forget this
 * device" deletes it, with everything else the browser kept for signing in
 * (Convex Auth removes its own tokens).
 *
 * ```ts
 * rememberEmail("ada@example.com");
 * rememberedEmail(); // "ada@example.com"
 * ```
 */
import { openStorage } from "./sessionStorage";

const KEY = "chat-last-email";

/** Every key Convex Auth keeps (`@convex-dev/auth` 0.0.95 `react/client.tsx`): its tokens, which `signOut` removes too, and its sign-in verifier. */
const CONVEX_AUTH_PREFIX = "__convexAuth";

export function rememberEmail(email: string): void {
  try {
    openStorage("local")?.setItem(KEY, email.trim());
  } catch {
    // Storage full or blocked: the form simply starts empty next time.
  }
}

export function rememberedEmail(): string {
  try {
    return openStorage("local")?.getItem(KEY) ?? "";
  } catch {
    return "";
  }
}

export function forgetRememberedEmail(): void {
  for (const area of ["local", "session"] as const) {
    const storage = openStorage(area);
    if (storage === null) continue;
    try {
      const keys = Array.from({ length: storage.length }, (_, i) =>
        storage.key(i),
      );
      for (const key of keys) {
        if (key === KEY || key?.startsWith(CONVEX_AUTH_PREFIX)) {
          storage.removeItem(key);
        }
      }
    } catch {
      // Blocked storage holds nothing to forget.
    }
  }
}
