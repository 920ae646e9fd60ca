/**
 * How long a session lives without use, and how often its `lastSeenAt` is
 * rewritten. Pure, read at call time, so a changed environment variable
 * applies to the next call.
 *
 * The period is the deployment environment variable `SESSION_IDLE_DAYS`
 * (`npx convex env set SESSION_IDLE_DAYS 7`; a decimal such as 0.5 is half a
 * day). Unset, empty or not a positive number, it is 30 days, and it is capped
 * at 10 years so the arithmetic below stays exact.
 *
 * ```ts
 * if (isSessionExpired(session, Date.now())) ...
 * ```
 */
import type { Doc } from "../_generated/dataModel";

/**
 * Convex gives functions `process.env` (docs.convex.dev/production/environment-variables).
 * Declared here because `src/` type-checks this module through
 * `_generated/api.d.ts` without Node's types.
 */
declare const process: { env: Record<string, string | undefined> };

export const DEFAULT_SESSION_IDLE_DAYS = 30;
const MAX_SESSION_IDLE_DAYS = 3650;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * `lastSeenAt` is rewritten at most once per 1/720 of the period: hourly for
 * 30 days. Every session query reads the session document, so each write
 * re-runs that browser's subscriptions; a session may therefore outlive the
 * period by up to one slice.
 */
const LAST_SEEN_SLICES = 720;

/** Never rewrite more often than once a minute, however short the period. */
const MIN_LAST_SEEN_SLICE_MS = 60 * 1000;

/** The idle period in milliseconds, from `SESSION_IDLE_DAYS`. */
export function sessionIdleTimeoutMs(): number {
  const raw = process.env.SESSION_IDLE_DAYS?.trim() ?? "";
  const days = raw === "" ? NaN : Number(raw);
  const valid = Number.isFinite(days) && days > 0;
  return (
    Math.min(valid ? days : DEFAULT_SESSION_IDLE_DAYS, MAX_SESSION_IDLE_DAYS) *
    DAY_MS
  );
}

/** How stale `lastSeenAt` may get before a mutation rewrites it. */
export function lastSeenSliceMs(): number {
  return Math.max(
    MIN_LAST_SEEN_SLICE_MS,
    Math.floor(sessionIdleTimeoutMs() / LAST_SEEN_SLICES),
  );
}

/** A session unused for the whole idle period no longer identifies anyone. */
export function isSessionExpired(
  session: Pick<Doc<"sessions">, "lastSeenAt">,
  now: number,
): boolean {
  return now - session.lastSeenAt >= sessionIdleTimeoutMs();
}

/** Sessions last seen before this instant have expired. */
export function expiredBefore(now: number): number {
  return now - sessionIdleTimeoutMs();
}
