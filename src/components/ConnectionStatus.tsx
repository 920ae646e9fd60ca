import { useConvexConnectionState } from "convex/react";

/** The Convex client's WebSocket state, announced politely when it changes. */
export function ConnectionStatus() {
  const { isWebSocketConnected, hasEverConnected } = useConvexConnectionState();
  const [state, label] = isWebSocketConnected
    ? ["connected", "Connected"]
    : hasEverConnected
      ? ["reconnecting", "Reconnecting…"]
      : ["connecting", "Connecting…"];

  return (
    <p role="status" className="connection" data-state={state}>
      <span className="connection__dot" aria-hidden="true" />
      {label}
    </p>
  );
}
