/**
 * Pairing: a guest moves to a second device without signing up. The first
 * device asks for a one-time code (`createPairingCode`); the second enters it
 * (`claimPairingCode`) and gets a session of its own, with a secret it made
 * itself, for the same user.
 *
 * The rules:
 * - a code is 8 Crockford base32 characters (40 random bits), shown as
 *   "ABCD-EFGH"; only its SHA-256 is stored;
 * - it works once, for `PAIRING_CODE_TTL_MS` (10 minutes); a new code
 *   replaces the user's previous one;
 * - wrong codes are counted per claiming session and for the whole
 *   deployment in fixed windows (`limits.ts`); past either limit a claim is
 *   refused with `PAIRING_RATE_LIMITED` and `retryAfter`, before the code is
 *   even looked at. A wrong, used or expired code all look the same.
 * - the claiming device's old session is deleted, and its guest with it if
 *   that guest has no other session and no message.
 *
 * ```ts
 * const { code } = await createPairingCode(ctx, ctx.user._id);
 * const result = await claimPairingCode(ctx, ctx.session, code, newSessionId);
 * ```
 */
import type { SessionId } from "convex-helpers/server/sessions";
import { ConvexError } from "convex/values";
import type { Doc, Id } from "../_generated/dataModel";
import type { MutationCtx } from "../_generated/server";
import {
  PAIRING_CODE_LENGTH,
  PAIRING_CODE_TTL_MS,
  PAIRING_GLOBAL_WINDOW_MS,
  PAIRING_MAX_FAILURES_GLOBAL,
  PAIRING_MAX_FAILURES_PER_SESSION,
  PAIRING_SESSION_WINDOW_MS,
  type ErrorData,
} from "../limits";
import { addSession } from "../lib/sessions";
import {
  deletePairingCodes,
  deleteSession,
  deleteGuestIfUnused,
  pairingFailureScope,
} from "./sessions";

/** Crockford's base32: no I, L, O or U, so a code reads aloud unambiguously. */
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const GLOBAL_SCOPE = "global";

type Limit = { scope: string; max: number; windowMs: number };

export type ClaimResult =
  { ok: true; userId: Id<"users"> } | { ok: false; reason: "invalid" };

/**
 * Makes a new code for `userId`, replacing any earlier one. The code is
 * returned once, here, and never stored.
 */
export async function createPairingCode(
  ctx: MutationCtx,
  userId: Id<"users">,
): Promise<{ code: string; expiresAt: number }> {
  await deletePairingCodes(ctx, userId);
  const code = randomCode();
  const expiresAt = Date.now() + PAIRING_CODE_TTL_MS;
  await ctx.db.insert("pairingCodes", {
    codeHash: await hashCode(code),
    userId,
    expiresAt,
  });
  return { code: `${code.slice(0, 4)}-${code.slice(4)}`, expiresAt };
}

/**
 * Spends `rawCode` for the caller's device: on success `newSessionId` is a
 * new session of the code's user and `session` is gone. A wrong code is an
 * ordinary result, not a throw, so the failure count it adds is committed.
 *
 * @throws ConvexError PAIRING_RATE_LIMITED past a guess limit;
 *   INVALID_SESSION when `newSessionId` is malformed or taken.
 */
export async function claimPairingCode(
  ctx: MutationCtx,
  session: Doc<"sessions">,
  rawCode: string,
  newSessionId: SessionId,
): Promise<ClaimResult> {
  const now = Date.now();
  const limits: Limit[] = [
    {
      scope: pairingFailureScope(session._id),
      max: PAIRING_MAX_FAILURES_PER_SESSION,
      windowMs: PAIRING_SESSION_WINDOW_MS,
    },
    {
      scope: GLOBAL_SCOPE,
      max: PAIRING_MAX_FAILURES_GLOBAL,
      windowMs: PAIRING_GLOBAL_WINDOW_MS,
    },
  ];
  for (const limit of limits) await checkLimit(ctx, limit, now);

  const code = normalizeCode(rawCode);
  if (code === null) return { ok: false, reason: "invalid" };
  const codeHash = await hashCode(code);
  const stored = await ctx.db
    .query("pairingCodes")
    .withIndex("by_codeHash", (q) => q.eq("codeHash", codeHash))
    .unique();
  if (stored === null || stored.expiresAt <= now) {
    for (const limit of limits) await recordFailure(ctx, limit, now);
    return { ok: false, reason: "invalid" };
  }

  await ctx.db.delete("pairingCodes", stored._id);
  await addSession(ctx, newSessionId, stored.userId);
  await deleteSession(ctx, session);
  if (session.userId !== stored.userId) {
    await deleteGuestIfUnused(ctx, session.userId);
  }
  return { ok: true, userId: stored.userId };
}

/** The longest any failure count matters; older counters can be swept. */
export const PAIRING_COUNTER_MAX_AGE_MS = Math.max(
  PAIRING_SESSION_WINDOW_MS,
  PAIRING_GLOBAL_WINDOW_MS,
);

/**
 * Upper-cases, drops spaces and dashes, and reads O as 0 and I or L as 1,
 * as Crockford's base32 does; null when it cannot be a code.
 */
export function normalizeCode(raw: string): string | null {
  if (raw.length > 4 * PAIRING_CODE_LENGTH) return null;
  const code = raw
    .toUpperCase()
    .replace(/[\s-]/g, "")
    .replace(/O/g, "0")
    .replace(/[IL]/g, "1");
  if (code.length !== PAIRING_CODE_LENGTH) return null;
  for (const char of code) if (!ALPHABET.includes(char)) return null;
  return code;
}

async function checkLimit(
  ctx: MutationCtx,
  { scope, max, windowMs }: Limit,
  now: number,
): Promise<void> {
  const counter = await findCounter(ctx, scope);
  if (counter === null || now - counter.windowStart >= windowMs) return;
  if (counter.count >= max) {
    throw new ConvexError<ErrorData>({
      code: "PAIRING_RATE_LIMITED",
      retryAfter: counter.windowStart + windowMs - now,
      message: "Too many wrong pairing codes; wait before trying again.",
    });
  }
}

async function recordFailure(
  ctx: MutationCtx,
  { scope, windowMs }: Limit,
  now: number,
): Promise<void> {
  const counter = await findCounter(ctx, scope);
  if (counter === null) {
    await ctx.db.insert("pairingFailures", {
      scope,
      windowStart: now,
      count: 1,
    });
  } else if (now - counter.windowStart >= windowMs) {
    await ctx.db.patch("pairingFailures", counter._id, {
      windowStart: now,
      count: 1,
    });
  } else {
    await ctx.db.patch("pairingFailures", counter._id, {
      count: counter.count + 1,
    });
  }
}

export async function findCounter(
  ctx: MutationCtx,
  scope: string,
): Promise<Doc<"pairingFailures"> | null> {
  return await ctx.db
    .query("pairingFailures")
    .withIndex("by_scope", (q) => q.eq("scope", scope))
    .unique();
}

/**
 * Eight characters of 5 random bits each from `crypto.getRandomValues`, which Convex backs with a CSPRNG
 * seeded per function run (convex-backend `crates/isolate`, `getRandomValues`
 * op); the bits are uniform because 32 divides 256.
 */
function randomCode(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(PAIRING_CODE_LENGTH));
  return Array.from(bytes, (byte) => ALPHABET[byte % ALPHABET.length]).join("");
}

/**
 * Lowercase hex SHA-256. Unsalted so the code can be looked up; 40 bits are
 * guessable offline, so a leaked row is only dangerous within its 10 minutes.
 */
async function hashCode(code: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(`pairing:${code}`),
  );
  return Array.from(new Uint8Array(digest), (byte) =>
    byte.toString(16).padStart(2, "0"),
  ).join("");
}
