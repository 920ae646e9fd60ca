/**
 * Abuse limits, with `@convex-dev/rate-limiter` (a component: its counters
 * live in its own tables and roll back with the mutation that consumed them,
 * so a refused or failed call costs nothing).
 *
 * - `createGuest`: new guests for the whole deployment. Convex shows
 *   queries and mutations no client address (only HTTP actions see request
 *   headers), so there is no per-address limit on this path; a global
 *   budget still stops one script from minting unbounded users.
 * - `sendBurst` and `sendSustained`: messages per user, both must allow.
 * - `rename`: renames per user.
 *
 * A refusal is `ConvexError({ code: "RATE_LIMITED", action, retryAfter })`.
 *
 * ```ts
 * await enforceLimit(ctx, "send", ctx.user._id);
 * ```
 */
import { HOUR, MINUTE, RateLimiter } from "@convex-dev/rate-limiter";
import { ConvexError } from "convex/values";
import type { Id } from "../_generated/dataModel";
import type { MutationCtx } from "../_generated/server";
import { components } from "../lib/components";
import {
  GUEST_CREATION_BURST,
  GUEST_CREATIONS_PER_HOUR,
  MESSAGE_BURST,
  MESSAGES_PER_HOUR,
  MESSAGES_PER_MINUTE,
  RENAME_BURST,
  RENAMES_PER_HOUR,
  type ErrorData,
  type RateLimitedAction,
} from "../limits";

export const rateLimiter = new RateLimiter(components.rateLimiter, {
  // Sharded: every new visitor anywhere consumes from this one budget, and
  // one shard would make all of their first mutations conflict.
  createGuest: {
    kind: "token bucket",
    rate: GUEST_CREATIONS_PER_HOUR,
    period: HOUR,
    capacity: GUEST_CREATION_BURST,
    shards: 10,
  },
  sendBurst: {
    kind: "token bucket",
    rate: MESSAGES_PER_MINUTE,
    period: MINUTE,
    capacity: MESSAGE_BURST,
  },
  sendSustained: {
    kind: "token bucket",
    rate: MESSAGES_PER_HOUR,
    period: HOUR,
  },
  rename: {
    kind: "token bucket",
    rate: RENAMES_PER_HOUR,
    period: HOUR,
    capacity: RENAME_BURST,
  },
});

type LimitName = "createGuest" | "sendBurst" | "sendSustained" | "rename";

const LIMITS: Record<RateLimitedAction, readonly LimitName[]> = {
  createGuest: ["createGuest"],
  send: ["sendBurst", "sendSustained"],
  rename: ["rename"],
};

/**
 * Consumes one unit of every limit on `action` (keyed by `userId` when
 * given), or throws with the longest wait among those that refuse.
 *
 * @throws ConvexError RATE_LIMITED with `action` and `retryAfter` in ms.
 */
export async function enforceLimit(
  ctx: MutationCtx,
  action: RateLimitedAction,
  userId?: Id<"users">,
): Promise<void> {
  let retryAfter = 0;
  for (const name of LIMITS[action]) {
    const status = await rateLimiter.limit(ctx, name, { key: userId });
    if (!status.ok) retryAfter = Math.max(retryAfter, status.retryAfter);
  }
  if (retryAfter > 0) {
    throw new ConvexError<ErrorData>({
      code: "RATE_LIMITED",
      action,
      retryAfter: Math.ceil(retryAfter),
      message: `Too many requests (${action}); try again in ${Math.ceil(retryAfter / 1000)} s.`,
    });
  }
}
