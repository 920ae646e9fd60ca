/**
 * `api.messages.send` with an optimistic update: the sender's message appears at
 * the bottom of their own list at once, under their current name. When the
 * server answers, Convex replaces it with the stored message; if the server
 * refuses it, the update is dropped and the message disappears again (the
 * composer keeps the draft and says why).
 */
import { useMemo } from "react";
import type { OptimisticLocalStore } from "convex/browser";
import { insertAtTop } from "convex/react";
import type { FunctionArgs } from "convex/server";
import { useSessionMutation } from "convex-helpers/react/sessions";
import { api } from "../../convex/_generated/api";
import type { Id } from "../../convex/_generated/dataModel";

let optimisticCount = 0;

function showSentMessage(
  store: OptimisticLocalStore,
  { sessionId, body }: FunctionArgs<typeof api.messages.send>,
) {
  const me = store.getQuery(api.users.me, { sessionId });
  if (!me) return;
  insertAtTop({
    paginatedQuery: api.messages.list,
    localQueryStore: store,
    item: {
      // Never sent anywhere: only a React key until the real id arrives.
      _id: `optimistic-${++optimisticCount}` as Id<"messages">,
      _creationTime: Date.now(),
      body: body.trim(),
      author: { _id: me._id, name: me.name, avatarUrl: me.avatarUrl },
    },
  });
}

export function useSendMessage() {
  const send = useSessionMutation(api.messages.send);
  return useMemo(() => send.withOptimisticUpdate(showSentMessage), [send]);
}
