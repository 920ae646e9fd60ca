/**
 * Calls `api.sessions.start` once per session secret, so a first-time visitor
 * gets an anonymous user ("User 4821") and sees a name at once.
 *
 * Usage: `const startError = useStartSession();` once, near the root; it is
 * null, or the words to show when the session could not start.
 */
import { useEffect, useRef, useState } from "react";
import {
  useSessionId,
  useSessionMutation,
} from "convex-helpers/react/sessions";
import { api } from "../../convex/_generated/api";
import {
  describeRefusal,
  isRefusal,
  refusalOf,
  START_FAILED,
} from "../lib/errors";

export function useStartSession(): string | null {
  const [sessionId, refreshSessionId] = useSessionId();
  const start = useSessionMutation(api.sessions.start);
  const [failure, setFailure] = useState<string | null>(null);
  /** Bumped to try again after the server said when. */
  const [attempt, setAttempt] = useState(0);
  // Refs survive StrictMode's effect replay, so the mutation runs once per id.
  const startedFor = useRef<string | undefined>(undefined);
  const refreshed = useRef(false);

  useEffect(() => {
    const key = `${sessionId}#${attempt}`;
    if (sessionId === undefined || startedFor.current === key) return;
    startedFor.current = key;
    let retry: ReturnType<typeof setTimeout> | undefined;
    start().then(
      () => setFailure(null),
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
        const refusal = refusalOf(error);
        if (refusal?.code === "RATE_LIMITED") {
          setFailure(describeRefusal(refusal));
          retry = setTimeout(
            () => setAttempt((n) => n + 1),
            refusal.retryAfter,
          );
          return;
        }
        console.error("Could not start the chat session.", error);
        setFailure(START_FAILED);
      },
    );
    return () => clearTimeout(retry);
  }, [sessionId, attempt, start, refreshSessionId]);

  return failure;
}
