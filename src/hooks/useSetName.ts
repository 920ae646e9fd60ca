/**
 * `api.users.setName` with an optimistic update: the name field and every
 * loaded page of the message list show the new name at once. If the server
 * refuses the name, Convex drops the update and both show the old name again.
 */
import { useMemo } from "react";
import type { OptimisticLocalStore } from "convex/browser";
import type { FunctionArgs } from "convex/server";
import { useSessionMutation } from "convex-helpers/react/sessions";
import { api } from "../../convex/_generated/api";

function renameEverywhere(
  store: OptimisticLocalStore,
  { sessionId, name }: FunctionArgs<typeof api.users.setName>,
) {
  const me = store.getQuery(api.users.me, { sessionId });
  if (!me) return;
  store.setQuery(api.users.me, { sessionId }, { ...me, name });

  for (const { args, value } of store.getAllQueries(api.messages.list)) {
    if (value === undefined) continue;
    store.setQuery(api.messages.list, args, {
      ...value,
      page: value.page.map((message) =>
        message.author._id === me._id
          ? { ...message, author: { ...message.author, name } }
          : message,
      ),
    });
  }
}

export function useSetName() {
  const setName = useSessionMutation(api.users.setName);
  return useMemo(
    () => setName.withOptimisticUpdate(renameEverywhere),
    [setName],
  );
}
