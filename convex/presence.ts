/**
 * Who is in the chat now, with `@convex-dev/presence`: each open tab sends a
 * heartbeat through the session middleware, so the user in the room is
 * always the caller's own (`ctx.user`), never one the client names. The list
 * takes only the room's token, so every page shares one subscription, and it
 * never exposes the tabs' session tokens (the component keeps room and
 * session tokens apart).
 *
 * The page's `usePresence` hook calls `heartbeat` every 10 s while the tab is
 * visible and in use, and `disconnect` (also by `navigator.sendBeacon` when
 * the tab closes); the component drops a tab that misses 2.5 heartbeats.
 */
import { Presence } from "@convex-dev/presence";
import { v } from "convex/values";
import { mutation, query } from "./_generated/server";
import { components } from "./lib/components";
import { mutationWithSession } from "./lib/sessions";
import { userFields } from "./schema";

const presence = new Presence(components.presence);

/** The chat has one room. */
const ROOM = "chat";

/** How often a tab may say it is here, in ms. */
const MIN_INTERVAL_MS = 5_000;
const MAX_INTERVAL_MS = 60_000;

/** A tab's presence id: a UUID it made, as the client hook does. */
const PRESENCE_ID_PATTERN = /^[0-9a-f-]{36}$/;

/** The longest list of people shown. */
const MAX_LISTED = 100;

/** Marks the caller's tab `presenceId` as here; returns the tokens for `list` and `disconnect`. */
export const heartbeat = mutationWithSession({
  args: { presenceId: v.string(), interval: v.number() },
  returns: v.object({ roomToken: v.string(), sessionToken: v.string() }),
  handler: async (ctx, { presenceId, interval }) => {
    if (!PRESENCE_ID_PATTERN.test(presenceId)) {
      throw new Error(
        "presenceId must be a UUID made by the tab (crypto.randomUUID()).",
      );
    }
    const clamped = Math.min(
      MAX_INTERVAL_MS,
      Math.max(MIN_INTERVAL_MS, interval),
    );
    // Scoped by user, so a tab that changes user (pairing) is a new presence
    // session rather than a conflict.
    return await presence.heartbeat(
      ctx,
      ROOM,
      ctx.user._id,
      `${ctx.user._id}:${presenceId}`,
      clamped,
    );
  },
});

/** The people here now, for everyone holding the room's token. */
export const list = query({
  args: { roomToken: v.string() },
  returns: v.array(v.object({ _id: v.id("users"), name: userFields.name })),
  handler: async (ctx, { roomToken }) => {
    const states = await presence.list(ctx, roomToken, MAX_LISTED);
    const here = await Promise.all(
      states
        .filter(({ online }) => online)
        .map(async ({ userId }) => {
          const id = ctx.db.normalizeId("users", userId);
          const user = id === null ? null : await ctx.db.get("users", id);
          return user === null ? null : { _id: user._id, name: user.name };
        }),
    );
    return here.filter((person) => person !== null);
  },
});

/** Ends one tab's presence; needs no session, as `sendBeacon` cannot add one. */
export const disconnect = mutation({
  args: { sessionToken: v.string() },
  returns: v.null(),
  handler: async (ctx, { sessionToken }) => {
    await presence.disconnect(ctx, sessionToken);
    return null;
  },
});
