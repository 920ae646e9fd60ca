/**
 * Keeps this tab in the chat's "here now" list and returns who is there.
 * Adapted from `@convex-dev/presence/react` (0.4.0 `usePresence`), with two
 * changes: the heartbeat goes through the session middleware (the server
 * decides which user is here), and a tab left alone counts as gone.
 *
 * The tab is here while it is visible and someone used it in the last
 * `IDLE_MS`; it sends a heartbeat every `INTERVAL_MS` and says goodbye when it
 * is hidden, goes idle, unmounts or closes (the last with
 * `navigator.sendBeacon`, which still runs as the page unloads).
 *
 * Usage: `const people = usePresence();` (undefined until the first answer).
 */
import { useEffect, useRef, useState } from "react";
import { useConvex, useMutation, useQuery } from "convex/react";
import { useSessionMutation } from "convex-helpers/react/sessions";
import type { FunctionReturnType } from "convex/server";
import { api } from "../../convex/_generated/api";
import { generateSessionId } from "../lib/sessionStorage";

const INTERVAL_MS = 10_000;
/** No key, pointer or touch for this long and the tab leaves the room. */
const IDLE_MS = 5 * 60_000;
const ACTIVITY_EVENTS = ["keydown", "pointerdown", "pointermove", "wheel"];

export type Person = FunctionReturnType<typeof api.presence.list>[number];

export function usePresence(): Person[] | undefined {
  const convex = useConvex();
  const heartbeat = useSessionMutation(api.presence.heartbeat);
  const disconnect = useMutation(api.presence.disconnect);
  const [roomToken, setRoomToken] = useState<string | null>(null);
  const sessionToken = useRef<string | null>(null);
  // A fresh UUID per mounted tab; the server scopes it by user.
  const [presenceId] = useState(() => generateSessionId());

  useEffect(() => {
    let active = false;
    let stopped = false;
    let timer: ReturnType<typeof setInterval> | undefined;
    let idleTimer: ReturnType<typeof setTimeout> | undefined;

    const beat = async () => {
      try {
        const tokens = await heartbeat({ presenceId, interval: INTERVAL_MS });
        if (stopped || !active) {
          void disconnect({ sessionToken: tokens.sessionToken });
          return;
        }
        sessionToken.current = tokens.sessionToken;
        setRoomToken(tokens.roomToken);
      } catch (error) {
        // A refused or lost heartbeat is retried on the next tick.
        console.warn("Presence heartbeat failed.", error);
      }
    };
    const arrive = () => {
      if (active || stopped) return;
      active = true;
      void beat();
      timer = setInterval(() => void beat(), INTERVAL_MS);
    };
    const leave = () => {
      if (!active) return;
      active = false;
      clearInterval(timer);
      const token = sessionToken.current;
      sessionToken.current = null;
      if (token) void disconnect({ sessionToken: token });
    };
    const noteActivity = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(leave, IDLE_MS);
      if (!document.hidden) arrive();
    };
    const onVisibility = () => (document.hidden ? leave() : noteActivity());
    const onUnload = () => {
      const token = sessionToken.current;
      if (!token) return;
      // The HTTP API's body (convex 1.48 `http_client.ts`); `sendBeacon`
      // cannot wait for the WebSocket.
      navigator.sendBeacon(
        `${convex.url}/api/mutation`,
        new Blob(
          [
            JSON.stringify({
              path: "presence:disconnect",
              args: { sessionToken: token },
              format: "json",
            }),
          ],
          { type: "application/json" },
        ),
      );
    };

    noteActivity();
    for (const type of ACTIVITY_EVENTS) {
      window.addEventListener(type, noteActivity, { passive: true });
    }
    document.addEventListener("visibilitychange", onVisibility);
    window.addEventListener("pagehide", onUnload);
    return () => {
      leave();
      stopped = true;
      clearTimeout(idleTimer);
      for (const type of ACTIVITY_EVENTS) {
        window.removeEventListener(type, noteActivity);
      }
      document.removeEventListener("visibilitychange", onVisibility);
      window.removeEventListener("pagehide", onUnload);
    };
  }, [convex, heartbeat, disconnect, presenceId]);

  return useQuery(api.presence.list, roomToken ? { roomToken } : "skip");
}
