/**
 * The chat's functions that Node-side code (these tests, `bench/`) calls
 * directly, as typed references by name.
 *
 * Not `convex/_generated/api`: its types import every Convex module, and
 * `convex/auth.ts` brings in Convex Auth's types, whose `@auth/core` pulls
 * in Preact's JSX types and with them the DOM lib, which would retype Node's
 * globals (`Headers`, `Blob`, `crypto`) in the whole Node project. The
 * shapes here follow `convex/messages.ts`, `convex/sessions.ts`,
 * `convex/users.ts` and Convex Auth's `auth:signIn`; a
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
  author: { _id: string; name: string; avatarUrl: string | null };
};

export type Profile = { _id: string; name: string; isAnonymous: boolean };

export type Me = Profile & { avatarUrl: string | null };

/** What Convex Auth's `auth:signIn` answers with a password or a refresh token. */
export type SignInResult = {
  tokens?: { token: string; refreshToken: string } | null;
};

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
    me: makeFunctionReference<"query", { sessionId: SessionId }, Me | null>(
      "users:me",
    ),
    setName: makeFunctionReference<
      "mutation",
      { sessionId: SessionId; name: string },
      null
    >("users:setName"),
  },
  auth: {
    signIn: makeFunctionReference<
      "action",
      | { provider: string; params: Record<string, string> }
      | { refreshToken: string },
      SignInResult
    >("auth:signIn"),
  },
};
