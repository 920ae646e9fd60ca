/**
 * Calls `api.sessions.start` once per session secret, so a first-time visitor
 * gets an anonymous user ("User 4821") and sees a name at once.
 *
 * Usage: `const startFailed = useStartSession();` once, near the root.
 */
import { useEffect, useRef, useState } from "react";
import {
  useSessionId,
  useSessionMutation,
} from "convex-helpers/react/sessions";
import { api } from "../../convex/_generated/api";
import { isRefusal } from "../lib/errors";

export function useStartSession(): boolean {
  const [sessionId, refreshSessionId] = useSessionId();
  const start = useSessionMutation(api.sessions.start);
  const [failed, setFailed] = useState(false);
  // Refs survive StrictMode's effect replay, so the mutation runs once per id.
  const startedFor = useRef<string | undefined>(undefined);
  const refreshed = useRef(false);

  useEffect(() => {
    if (sessionId === undefined || startedFor.current === sessionId) return;
    startedFor.current = sessionId;
    start().then(
      () => setFailed(false),
      (error: unknown) => {
        // A secret the server will not accept (one stored by an older build,
        // or one unused for so long that it expired) is replaced once; a
        // second refusal is a real failure.
        if (
          (isRefusal(error, "INVALID_SESSION") ||
            isRefusal(error, "SESSION_EXPIRED")) &&
          !refreshed.current
        ) {
          refreshed.current = true;
          void refreshSessionId();
          return;
        }
        console.error("Could not start the chat session.", error);
        setFailed(true);
      },
    );
  }, [sessionId, start, refreshSessionId]);

  return failed;
}
