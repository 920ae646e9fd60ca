/**
 * Passwords for the e-mail and password sign-in (`convex/auth.ts`): the rules
 * a new password must meet, and how it is hashed.
 *
 * Hashing is PBKDF2-HMAC-SHA-512 through Web Crypto, not the Password
 * provider's default, Lucia's pure-JS Scrypt: Convex Auth hashes inside its
 * `auth:store` mutation, which may run for 1 s, and Scrypt took ~0.7 s of CPU
 * there, while Web Crypto's PBKDF2 runs natively. 100,000 iterations cost
 * ~0.1 s on the 2-core development VM under load (210,000, OWASP's Password
 * Storage Cheat Sheet figure for SHA-512, cost ~0.35 s there, too close to
 * the budget on a busy machine). The stored form names its parameters
 * (`pbkdf2-sha512$<iterations>$<salt>$<hash>`), so a deployment can raise
 * `ITERATIONS` and old passwords still verify.
 *
 * ```ts
 * const stored = await hashPassword("correct horse");
 * await verifyPassword("correct horse", stored); // true
 * ```
 */
import { ConvexError } from "convex/values";
import {
  PASSWORD_MAX_CHARS,
  PASSWORD_MIN_CHARS,
  type ErrorData,
} from "../limits";

const SCHEME = "pbkdf2-sha512";
const ITERATIONS = 100_000;
const SALT_BYTES = 16;
const HASH_BITS = 512;

/** An e-mail address as accounts are keyed: trimmed, lowercase. */
export function normalizeEmail(raw: unknown): string {
  const email = typeof raw === "string" ? raw.trim().toLowerCase() : "";
  if (!/^[^\s@]+@[^\s@]+$/.test(email) || email.length > 254) {
    throw new ConvexError<ErrorData>({
      code: "EMAIL_INVALID",
      message: "Type an e-mail address such as ada@example.com.",
    });
  }
  return email;
}

/**
 * @throws ConvexError PASSWORD_TOO_WEAK when shorter than
 *   `PASSWORD_MIN_CHARS` or longer than `PASSWORD_MAX_CHARS`.
 */
export function checkNewPassword(password: unknown): string {
  if (
    typeof password !== "string" ||
    password.length < PASSWORD_MIN_CHARS ||
    password.length > PASSWORD_MAX_CHARS
  ) {
    throw new ConvexError<ErrorData>({
      code: "PASSWORD_TOO_WEAK",
      min: PASSWORD_MIN_CHARS,
      max: PASSWORD_MAX_CHARS,
      message: `A password needs ${PASSWORD_MIN_CHARS} to ${PASSWORD_MAX_CHARS} characters.`,
    });
  }
  return password;
}

export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const hash = await pbkdf2(password, salt, ITERATIONS);
  return [SCHEME, ITERATIONS, toBase64(salt), toBase64(hash)].join("$");
}

export async function verifyPassword(
  password: string,
  stored: string,
): Promise<boolean> {
  const [scheme, iterations, salt, expected] = stored.split("$");
  if (scheme !== SCHEME || expected === undefined) return false;
  const hash = await pbkdf2(password, fromBase64(salt), Number(iterations));
  return constantTimeEqual(toBase64(hash), expected);
}

async function pbkdf2(
  password: string,
  salt: Uint8Array<ArrayBuffer>,
  iterations: number,
): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(password),
    "PBKDF2",
    false,
    ["deriveBits"],
  );
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-512", salt, iterations },
    key,
    HASH_BITS,
  );
  return new Uint8Array(bits);
}

function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) {
    difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  }
  return difference === 0;
}

function toBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}
