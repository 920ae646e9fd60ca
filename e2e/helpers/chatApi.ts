/**
 * The chat's functions that Node-side code (these tests, `bench/`) calls
 * directly, as typed references by name.
 *
 * Not `convex/_generated/api`: its types import every Convex module, and
 * `convex/auth.ts` brings in Convex Auth's types, whose `@auth/core` pulls
 * in Preact's JSX types and with them the DOM lib, which would retype Node's
 * globals (`Headers`, `Blob`, `crypto`) in the whole Node project. The
 * shapes here follow `convex/messages.ts` and `convex/sessions.ts`; a
 * mismatch fails at run time with the server's argument validation error.
 *
 * ```ts
 * await client.mutation(chatApi.messages.send, { sessionId, body });
 * ```
 */
import { makeFunctionReference, type PaginationResult } from "convex/server";
import type { SessionId } from "convex-helpers/server/sessions";

export type ListedMessage = {
  _id: string;
  _creationTime: number;
  body: string;
  author: { _id: string; name: string };
};

export type Profile = { _id: string; name: string; isAnonymous: boolean };

export const chatApi = {
  messages: {
    list: makeFunctionReference<
      "query",
      { paginationOpts: { numItems: number; cursor: string | null } },
      PaginationResult<ListedMessage>
    >("messages:list"),
    send: makeFunctionReference<
      "mutation",
      { sessionId: SessionId; body: string },
      string
    >("messages:send"),
  },
  sessions: {
    start: makeFunctionReference<"mutation", { sessionId: SessionId }, Profile>(
      "sessions:start",
    ),
  },
  users: {
    setName: makeFunctionReference<
      "mutation",
      { sessionId: SessionId; name: string },
      null
    >("users:setName"),
  },
};
