/**
 * Limits and error codes shared with the web client. This module has no
 * imports, so `src/` can import it without pulling in server code.
 *
 * Every expected failure of a public function is a `ConvexError` whose `data`
 * is one of {@link ErrorData}; the UI switches on `data.code` and writes its
 * own words (`message` is a fallback for logs and other clients).
 *
 * ```ts
 * if (error instanceof ConvexError && error.data.code === "NAME_TOO_LONG") ...
 * ```
 */

/** The longest display name, in user-perceived characters. */
export const NAME_MAX_CHARS = 40;

/** The longest message body, in user-perceived characters. */
export const MESSAGE_MAX_CHARS = 2000;

/** How long a pairing code for a second device can be used. */
export const PAIRING_CODE_TTL_MS = 10 * 60 * 1000;

/** Characters in a pairing code (Crockford base32: 40 random bits). */
export const PAIRING_CODE_LENGTH = 8;

/** Wrong pairing codes one session may enter per window before it must wait. */
export const PAIRING_MAX_FAILURES_PER_SESSION = 5;
export const PAIRING_SESSION_WINDOW_MS = 10 * 60 * 1000;

/**
 * Wrong pairing codes the whole deployment accepts per window: a guesser with
 * many fresh sessions gets at most this many tries a minute, so with 1,000
 * live codes of 40 bits a day of guessing succeeds with odds under 1 in 10,000.
 */
export const PAIRING_MAX_FAILURES_GLOBAL = 100;
export const PAIRING_GLOBAL_WINDOW_MS = 60 * 1000;

/** Messages deleted per call of `users.remove`. */
export const DELETE_BATCH_SIZE = 200;

/** Rows of each kind the clean-up job deletes per transaction. */
export const CLEANUP_BATCH_SIZE = 100;

/** How often the clean-up job runs (`crons.ts`); a full batch runs again at once. */
export const CLEANUP_INTERVAL_MINUTES = 10;

/**
 * New guests per hour for the whole deployment, and how many may arrive at
 * once. For scale: Firebase allows 100 anonymous sign-ups an hour per IP
 * address and Supabase 30; this budget is shared by everyone because
 * mutations see no address (`model/rateLimits.ts`).
 */
export const GUEST_CREATIONS_PER_HOUR = 3000;
export const GUEST_CREATION_BURST = 300;

/** Messages per user: a quick burst of 5, then one every 3 s, at most 300 an hour. */
export const MESSAGE_BURST = 5;
export const MESSAGES_PER_MINUTE = 20;
export const MESSAGES_PER_HOUR = 300;

/** Renames per user: 5 in a row, then one every 6 minutes. */
export const RENAME_BURST = 5;
export const RENAMES_PER_HOUR = 10;

/** The shortest password a sign-up accepts, and the longest. */
export const PASSWORD_MIN_CHARS = 8;
export const PASSWORD_MAX_CHARS = 256;

/** Profile pictures: the image types a member may upload, and the largest size. */
export const AVATAR_TYPES = [
  "image/png",
  "image/jpeg",
  "image/webp",
  "image/gif",
] as const;
export const AVATAR_MAX_BYTES = 2 * 1024 * 1024;

export type RateLimitedAction = "createGuest" | "send" | "rename";

export type ErrorData =
  | { code: "INVALID_SESSION"; message: string }
  | { code: "SESSION_EXPIRED"; message: string }
  | { code: "NOT_SIGNED_IN"; message: string }
  | { code: "MERGE_NOT_A_GUEST"; message: string }
  | { code: "EMAIL_INVALID"; message: string }
  | { code: "EMAIL_TAKEN"; message: string }
  | { code: "WRONG_PASSWORD"; message: string }
  | { code: "PASSWORD_TOO_WEAK"; min: number; max: number; message: string }
  | { code: "TOO_MANY_ATTEMPTS"; message: string }
  | { code: "AVATAR_MEMBERS_ONLY"; message: string }
  | { code: "AVATAR_TYPE"; message: string }
  | { code: "AVATAR_TOO_LARGE"; max: number; message: string }
  | { code: "AVATAR_IN_USE"; message: string }
  | {
      code: "RATE_LIMITED";
      action: RateLimitedAction;
      /** Milliseconds until the same call would be allowed. */
      retryAfter: number;
      message: string;
    }
  | {
      code: "PAIRING_RATE_LIMITED";
      /** Milliseconds until the next guess is accepted. */
      retryAfter: number;
      message: string;
    }
  | { code: "NAME_EMPTY"; message: string }
  | { code: "NAME_TOO_LONG"; max: number; message: string }
  | { code: "NAME_INVALID_CHARACTERS"; message: string }
  | { code: "MESSAGE_EMPTY"; message: string }
  | { code: "MESSAGE_TOO_LONG"; max: number; message: string };

export type ErrorCode = ErrorData["code"];
