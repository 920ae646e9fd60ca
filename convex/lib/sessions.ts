/**
 * Function builders that identify the caller: the signed-in account's user
 * when the call carries a Convex Auth token, otherwise the guest of a session
 * id. The session id is a secret the
 * browser makes once with `crypto.randomUUID()` and sends as the `sessionId`
 * argument (convex-helpers `SessionIdArg`; `useSessionQuery` and
 * `useSessionMutation` add it on the client). Handlers see the caller as
 * `ctx.session` and `ctx.user`.
 *
 * The session id is a bearer secret, handled only here:
 * - it must be a lowercase UUID v4 (122 random bits), or the call fails with
 *   `ConvexError({ code: "INVALID_SESSION" })`. The shape check refuses short
 *   or hand-picked ids; it cannot prove a well-formed id was drawn at random.
 * - it is hashed with SHA-256 and only the hash is stored and looked up
 *   (`sessions.by_tokenHash`). Neither the id nor its hash is returned,
 *   logged or put in an error here. `ctx.session` holds the hash, so handlers
 *   return only what their `returns` validator lets through.
 *
 * A session unused for the idle period (`model/expiry.ts`, 30 days by
 * default) has expired: queries see it as unknown, mutations refuse it with
 * `SESSION_EXPIRED`, and the browser makes itself a new secret.
 *
 * A query cannot write, so in `queryWithSession` both are null until the
 * browser's first mutation. `mutationWithSession` creates the session and an
 * anonymous user on first use, so there both are always documents:
 *
 * ```ts
 * export const setName = mutationWithSession({
 *   args: { name: v.string() },
 *   returns: v.null(),
 *   handler: async (ctx, { name }) => {
 *     await setUserName(ctx, ctx.user._id, name);
 *     return null;
 *   },
 * });
 * ```
 */
import {
  customMutation,
  customQuery,
} from "convex-helpers/server/customFunctions";
import { SessionIdArg, type SessionId } from "convex-helpers/server/sessions";
import { getAuthSessionId, getAuthUserId } from "@convex-dev/auth/server";
import { ConvexError } from "convex/values";
import type { Doc, Id } from "../_generated/dataModel";
import {
  internalMutation,
  mutation,
  query,
  type MutationCtx,
  type QueryCtx,
} from "../_generated/server";
import type { ErrorData } from "../limits";
import { isSessionExpired, lastSeenSliceMs } from "../model/expiry";
import { enforceLimit } from "../model/rateLimits";
import { createAnonymousUser } from "../model/users";

/** What `crypto.randomUUID()` returns: version nibble 4, variant 8 to b. */
const SESSION_ID_PATTERN =
  /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * A public query that takes the caller's `sessionId`.
 *
 * Adds `ctx.session` (`Doc<"sessions">`) and `ctx.user` (`Doc<"users">`),
 * both null when this session has not made its first mutation yet or has
 * expired.
 *
 * ```ts
 * export const me = queryWithSession({
 *   args: {},
 *   returns: v.union(vProfile, v.null()),
 *   handler: (ctx) => (ctx.user === null ? null : toProfile(ctx.user)),
 * });
 * ```
 *
 * @throws ConvexError INVALID_SESSION when `sessionId` is not a lowercase
 *   UUID v4.
 */
export const queryWithSession = customQuery(query, {
  args: SessionIdArg,
  input: async (ctx, { sessionId }) => {
    const found = await findSession(ctx, await hashSessionId(sessionId));
    const session =
      found === null || isSessionExpired(found, Date.now()) ? null : found;
    const account = await getAccount(ctx);
    const user =
      account ?? (session === null ? null : await getSessionUser(ctx, session));
    return { ctx: { session, user }, args: {} };
  },
});

/**
 * A public mutation that takes the caller's `sessionId`.
 *
 * Adds `ctx.session` (`Doc<"sessions">`) and `ctx.user` (`Doc<"users">`),
 * never null: an unknown session id gets a new session and a new anonymous
 * user ("User NNNN"), within the deployment's guest budget
 * (`model/rateLimits.ts`), which roll back with everything else if the
 * handler throws. Refreshes `session.lastSeenAt` at most once per slice of the idle
 * period (hourly for 30 days).
 *
 * ```ts
 * export const send = mutationWithSession({
 *   args: { body: v.string() },
 *   returns: v.id("messages"),
 *   handler: (ctx, { body }) => sendMessage(ctx, ctx.user._id, body),
 * });
 * ```
 *
 * @throws ConvexError INVALID_SESSION when `sessionId` is not a lowercase
 *   UUID v4, SESSION_EXPIRED when its session was unused for the idle period,
 *   RATE_LIMITED when a new guest would exceed the guest budget.
 */
export const mutationWithSession = customMutation(mutation, {
  args: SessionIdArg,
  input: (ctx: MutationCtx, { sessionId }: { sessionId: SessionId }) =>
    identifyForMutation(ctx, sessionId),
});

/**
 * `mutationWithSession` for an internal mutation: an action that checks
 * something first (`avatars.setAvatar`) passes on the caller's `sessionId`,
 * and Convex passes on the caller's auth token with `ctx.runMutation`.
 */
export const internalMutationWithSession = customMutation(internalMutation, {
  args: SessionIdArg,
  input: (ctx: MutationCtx, { sessionId }: { sessionId: SessionId }) =>
    identifyForMutation(ctx, sessionId),
});

async function identifyForMutation(ctx: MutationCtx, sessionId: SessionId) {
  const tokenHash = await hashSessionId(sessionId);
  const existing = await findSession(ctx, tokenHash);
  const account = await getAccount(ctx);
  const session =
    existing === null
      ? await createSession(ctx, tokenHash, account?._id ?? null)
      : await markSeen(ctx, existing);
  const user = account ?? (await getSessionUser(ctx, session));
  return { ctx: { session, user }, args: {} };
}

/**
 * Gives `userId` a new session whose secret is `sessionId`, for a device that
 * takes over an identity (pairing). The caller's old session is not touched.
 *
 * @throws ConvexError INVALID_SESSION when `sessionId` is not a lowercase
 *   UUID v4 or already belongs to a session.
 */
export async function addSession(
  ctx: MutationCtx,
  sessionId: SessionId,
  userId: Id<"users">,
): Promise<Doc<"sessions">> {
  const tokenHash = await hashSessionId(sessionId);
  if ((await findSession(ctx, tokenHash)) !== null) {
    throw new ConvexError<ErrorData>({
      code: "INVALID_SESSION",
      message: "The new session id is already in use; make another one.",
    });
  }
  const id = await ctx.db.insert("sessions", {
    tokenHash,
    userId,
    lastSeenAt: Date.now(),
  });
  return (await ctx.db.get("sessions", id))!;
}

/**
 * Refuses anything but a lowercase UUID v4, then returns its lowercase hex
 * SHA-256. No salt or stretching: the input has 122 random bits, so it cannot
 * be recovered by guessing, and equal ids must give equal hashes for lookup.
 */
async function hashSessionId(sessionId: SessionId): Promise<string> {
  if (!SESSION_ID_PATTERN.test(sessionId)) {
    throw new ConvexError<ErrorData>({
      code: "INVALID_SESSION",
      message:
        "The session id must be a lowercase UUID v4, as crypto.randomUUID() makes.",
    });
  }
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(sessionId),
  );
  return Array.from(new Uint8Array(digest), (byte) =>
    byte.toString(16).padStart(2, "0"),
  ).join("");
}

async function findSession(
  ctx: QueryCtx,
  tokenHash: string,
): Promise<Doc<"sessions"> | null> {
  return await ctx.db
    .query("sessions")
    .withIndex("by_tokenHash", (q) => q.eq("tokenHash", tokenHash))
    .unique();
}

/** A session for `accountId`, or for a new guest when signed out. */
async function createSession(
  ctx: MutationCtx,
  tokenHash: string,
  accountId: Id<"users"> | null,
): Promise<Doc<"sessions">> {
  let userId = accountId;
  if (userId === null) {
    await enforceLimit(ctx, "createGuest");
    userId = await createAnonymousUser(ctx);
  }
  const id = await ctx.db.insert("sessions", {
    tokenHash,
    userId,
    lastSeenAt: Date.now(),
  });
  return (await ctx.db.get("sessions", id))!;
}

/** Refuses an expired session, else refreshes `lastSeenAt` once per slice. */
async function markSeen(
  ctx: MutationCtx,
  session: Doc<"sessions">,
): Promise<Doc<"sessions">> {
  const now = Date.now();
  if (isSessionExpired(session, now)) {
    throw new ConvexError<ErrorData>({
      code: "SESSION_EXPIRED",
      message:
        "This session was unused for too long and has ended; make a new session id.",
    });
  }
  if (now - session.lastSeenAt < lastSeenSliceMs()) {
    return session;
  }
  await ctx.db.patch("sessions", session._id, { lastSeenAt: now });
  return { ...session, lastSeenAt: now };
}

/**
 * The signed-in account's user (Convex Auth puts `userId|sessionId` in the
 * token's subject), or null without a token, when the user is gone, or when
 * the token's Convex Auth session has ended. A Convex Auth JWT stays valid
 * until it expires (an hour) even after `signOut` deletes its session, so
 * without that check a token copied before sign-out would still be the
 * account; with it, sign-out ends the token at once.
 */
export async function getAccount(ctx: QueryCtx): Promise<Doc<"users"> | null> {
  const userId = await getAuthUserId(ctx);
  if (userId === null) return null;
  const raw = await getAuthSessionId(ctx);
  const authSessionId =
    raw === null ? null : ctx.db.normalizeId("authSessions", raw);
  const authSession =
    authSessionId === null
      ? null
      : await ctx.db.get("authSessions", authSessionId);
  return authSession === null ? null : await ctx.db.get("users", userId);
}

async function getSessionUser(
  ctx: QueryCtx,
  session: Doc<"sessions">,
): Promise<Doc<"users">> {
  const user = await ctx.db.get("users", session.userId);
  if (user === null) {
    throw new Error(
      `Session ${session._id} points at user ${session.userId}, which does not exist; delete the session with its user.`,
    );
  }
  return user;
}
