/**
 * Plain words for every refusal the chat can show, in one place.
 *
 * The server refuses with a `ConvexError` whose data is an `ErrorData` from
 * `convex/limits.ts`; its `message` is only a fallback, the UI words its own.
 * The client pre-checks here return the same codes, so a refusal reads the same
 * whichever side caught it; the server stays the authority and the pre-checks
 * only save a round trip. Lengths are counted as the server counts them
 * (`convex/model/text.ts`: user-perceived characters).
 *
 * Usage: `setError(sendErrorText(error, body))` in a mutation's catch.
 */
import { ConvexError } from "convex/values";
import {
  AVATAR_MAX_BYTES,
  MESSAGE_MAX_CHARS,
  NAME_MAX_CHARS,
  PASSWORD_MAX_CHARS,
  PASSWORD_MIN_CHARS,
  type ErrorCode,
  type ErrorData,
  type RateLimitedAction,
} from "../../convex/limits";
import { countCharacters, isLongerThan } from "../../convex/model/text";

type WithoutMessage<T> = T extends unknown ? Omit<T, "message"> : never;

/** An `ErrorData` without the server's fallback words. */
export type Refusal = WithoutMessage<ErrorData>;

const GENERIC_SEND = "Couldn't send. Check your connection and try again.";
const GENERIC_RENAME =
  "Couldn't save your name. Check your connection and try again.";
const GENERIC_PAIRING =
  "Couldn't reach the chat to pair devices. Check your connection and try again.";
const GENERIC_DELETE =
  "Couldn't delete everything. Check your connection and try again; what is already deleted stays deleted.";
const GENERIC_SIGN_IN =
  "Couldn't sign in. Check your e-mail, password and connection, and try again.";
const GENERIC_SIGN_UP =
  "Couldn't create your account. Check your connection and try again.";
const GENERIC_AVATAR =
  "Couldn't upload your picture. Check your connection and try again.";
export const WRONG_PAIRING_CODE =
  "That code is wrong, used or expired. Show a new code on your other device and type it here.";
export const START_FAILED =
  "Couldn't start your chat session. Reload the page to try again.";

const NUMBER = new Intl.NumberFormat("en-US");

const RATE_LIMITED_WORDS: Record<RateLimitedAction, string> = {
  createGuest: "Too many new visitors are joining right now.",
  send: "You're sending messages faster than the chat allows.",
  rename: "You've changed your name too often.",
};

export function formatCount(n: number): string {
  return NUMBER.format(n);
}

/**
 * @param body For MESSAGE_TOO_LONG: the text that was refused, to say how
 *   long it was.
 */
export function describeRefusal(refusal: Refusal, body?: string): string {
  switch (refusal.code) {
    case "MESSAGE_EMPTY":
      return "Type a message first.";
    case "MESSAGE_TOO_LONG": {
      const limit = `Messages can be at most ${formatCount(refusal.max)} characters`;
      return body === undefined
        ? `${limit}.`
        : `${limit} (this one has ${formatCount(countCharacters(body))}).`;
    }
    case "NAME_EMPTY":
      return "Type a name first.";
    case "NAME_TOO_LONG":
      return `Names can be at most ${formatCount(refusal.max)} characters.`;
    case "NAME_INVALID_CHARACTERS":
      return "Names can't contain control characters.";
    case "INVALID_SESSION":
      return "Your chat session has ended. Reload the page to start a new one.";
    case "SESSION_EXPIRED":
      return "Your chat session ended after a long time unused. Reload the page to start a new one.";
    case "PAIRING_RATE_LIMITED":
      return `Too many wrong codes. Try again ${formatWait(refusal.retryAfter)}.`;
    case "NOT_SIGNED_IN":
      return "Sign in first.";
    case "MERGE_NOT_A_GUEST":
      return "This guest has already joined an account.";
    case "EMAIL_INVALID":
      return "Type your e-mail address, such as ada@example.com.";
    case "EMAIL_TAKEN":
      return "There is already an account with this e-mail. Sign in instead.";
    case "WRONG_PASSWORD":
      return "Wrong e-mail or password.";
    case "PASSWORD_TOO_WEAK":
      return `Choose a longer password: at least ${formatCount(refusal.min)} characters.`;
    case "TOO_MANY_ATTEMPTS":
      return "Too many wrong passwords for this account. Wait a while and try again.";
    case "AVATAR_MEMBERS_ONLY":
      return "Sign up to upload a profile picture.";
    case "AVATAR_TYPE":
      return "That file is not a picture the chat takes: choose a PNG, JPEG, WebP or GIF.";
    case "AVATAR_TOO_LARGE":
      return `That picture is too large: at most ${formatBytes(refusal.max)}.`;
    case "AVATAR_IN_USE":
      return "That picture belongs to someone else. Upload your own.";
    case "RATE_LIMITED":
      return `${RATE_LIMITED_WORDS[refusal.action]} Try again ${formatWait(refusal.retryAfter)}.`;
    default:
      refusal satisfies never;
      throw new Error(`No words for refusal ${JSON.stringify(refusal)}`);
  }
}

/**
 * When a refused action may be tried again, in words: "in 40 seconds",
 * "in 3 minutes", "in about 2 hours". Rounded up, so the user is never told
 * a time at which they would still be refused.
 */
export function formatWait(ms: number): string {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  if (seconds < 60) return `in ${plural(seconds, "second")}`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) return `in ${plural(minutes, "minute")}`;
  return `in about ${plural(Math.ceil(minutes / 60), "hour")}`;
}

function formatBytes(bytes: number): string {
  return `${formatCount(bytes / 1024 / 1024)} MiB`;
}

function plural(n: number, unit: string): string {
  return n === 1 ? `1 ${unit}` : `${formatCount(n)} ${unit}s`;
}

/** `body` is the trimmed text about to be sent. */
export function checkMessage(body: string): Refusal | null {
  if (body === "") return { code: "MESSAGE_EMPTY" };
  if (isLongerThan(body, MESSAGE_MAX_CHARS)) {
    return { code: "MESSAGE_TOO_LONG", max: MESSAGE_MAX_CHARS };
  }
  return null;
}

/**
 * `name` is the trimmed text about to be saved. Checks a subset of the
 * server's rules (control characters, not bidi controls), in the same order.
 */
export function checkName(name: string): Refusal | null {
  if (name === "") return { code: "NAME_EMPTY" };
  if (/\p{Cc}/u.test(name)) return { code: "NAME_INVALID_CHARACTERS" };
  if (isLongerThan(name, NAME_MAX_CHARS)) {
    return { code: "NAME_TOO_LONG", max: NAME_MAX_CHARS };
  }
  return null;
}

/** `body` is the trimmed text that was sent. */
export function sendErrorText(error: unknown, body: string): string {
  const refusal = refusalOf(error);
  return refusal
    ? describeRefusal(refusal, body)
    : (serverWords(error) ?? GENERIC_SEND);
}

export function renameErrorText(error: unknown): string {
  const refusal = refusalOf(error);
  return refusal
    ? describeRefusal(refusal)
    : (serverWords(error) ?? GENERIC_RENAME);
}

export function pairingErrorText(error: unknown): string {
  const refusal = refusalOf(error);
  return refusal
    ? describeRefusal(refusal)
    : (serverWords(error) ?? GENERIC_PAIRING);
}

/**
 * Words for a failed sign-in or sign-up. Convex Auth's own failures are plain
 * errors (on a production deployment only "Server Error" reaches the page),
 * so anything without a code gets words that fit the flow.
 */
export function signInErrorText(
  error: unknown,
  flow: "signIn" | "signUp",
): string {
  const refusal = refusalOf(error);
  if (refusal) return describeRefusal(refusal);
  return flow === "signIn" ? GENERIC_SIGN_IN : GENERIC_SIGN_UP;
}

export function avatarErrorText(error: unknown): string {
  const refusal = refusalOf(error);
  return refusal
    ? describeRefusal(refusal)
    : (serverWords(error) ?? GENERIC_AVATAR);
}

export function signOutErrorText(error: unknown): string {
  const refusal = refusalOf(error);
  return refusal
    ? describeRefusal(refusal)
    : "Couldn't sign out. Check your connection and try again.";
}

export function deleteErrorText(error: unknown): string {
  const refusal = refusalOf(error);
  return refusal
    ? describeRefusal(refusal)
    : (serverWords(error) ?? GENERIC_DELETE);
}

export function isRefusal(error: unknown, code: ErrorCode): boolean {
  return refusalOf(error)?.code === code;
}

/** The refusal in a `ConvexError`, or null for any other failure. */
export function refusalOf(error: unknown): Refusal | null {
  const data = convexErrorData(error);
  if (data === null) return null;
  switch (data.code) {
    case "INVALID_SESSION":
      return { code: "INVALID_SESSION" };
    case "SESSION_EXPIRED":
      return { code: "SESSION_EXPIRED" };
    case "PAIRING_RATE_LIMITED":
      return {
        code: "PAIRING_RATE_LIMITED",
        retryAfter: numberOr(data.retryAfter, 60_000),
      };
    case "RATE_LIMITED": {
      const action = data.action;
      return action === "createGuest" ||
        action === "send" ||
        action === "rename"
        ? {
            code: "RATE_LIMITED",
            action,
            retryAfter: numberOr(data.retryAfter, 60_000),
          }
        : null;
    }
    case "NAME_EMPTY":
      return { code: "NAME_EMPTY" };
    case "NAME_TOO_LONG":
      return { code: "NAME_TOO_LONG", max: numberOr(data.max, NAME_MAX_CHARS) };
    case "NAME_INVALID_CHARACTERS":
      return { code: "NAME_INVALID_CHARACTERS" };
    case "MESSAGE_EMPTY":
      return { code: "MESSAGE_EMPTY" };
    case "EMAIL_INVALID":
    case "EMAIL_TAKEN":
    case "WRONG_PASSWORD":
    case "TOO_MANY_ATTEMPTS":
    case "AVATAR_MEMBERS_ONLY":
    case "AVATAR_TYPE":
    case "AVATAR_IN_USE":
      return { code: data.code };
    case "PASSWORD_TOO_WEAK":
      return {
        code: "PASSWORD_TOO_WEAK",
        min: numberOr(data.min, PASSWORD_MIN_CHARS),
        max: numberOr(data.max, PASSWORD_MAX_CHARS),
      };
    case "AVATAR_TOO_LARGE":
      return {
        code: "AVATAR_TOO_LARGE",
        max: numberOr(data.max, AVATAR_MAX_BYTES),
      };
    case "MESSAGE_TOO_LONG":
      return {
        code: "MESSAGE_TOO_LONG",
        max: numberOr(data.max, MESSAGE_MAX_CHARS),
      };
    default:
      return null;
  }
}

/** A `ConvexError` with a code this build doesn't know may still explain itself. */
function serverWords(error: unknown): string | null {
  const message = convexErrorData(error)?.message;
  return typeof message === "string" && message !== "" ? message : null;
}

function convexErrorData(error: unknown): Record<string, unknown> | null {
  if (!(error instanceof ConvexError)) return null;
  const data: unknown = error.data;
  return typeof data === "object" && data !== null
    ? (data as Record<string, unknown>)
    : null;
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === "number" ? value : fallback;
}
