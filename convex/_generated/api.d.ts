/* eslint-disable */
/**
 * Generated `api` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `npx convex dev`.
 * @module
 */

import type * as accounts from "../accounts.js";
import type * as auth from "../auth.js";
import type * as avatars from "../avatars.js";
import type * as cleanup from "../cleanup.js";
import type * as crons from "../crons.js";
import type * as http from "../http.js";
import type * as lib_sessions from "../lib/sessions.js";
import type * as limits from "../limits.js";
import type * as messages from "../messages.js";
import type * as model_accounts from "../model/accounts.js";
import type * as model_avatars from "../model/avatars.js";
import type * as model_cleanup from "../model/cleanup.js";
import type * as model_expiry from "../model/expiry.js";
import type * as model_messages from "../model/messages.js";
import type * as model_pairing from "../model/pairing.js";
import type * as model_passwords from "../model/passwords.js";
import type * as model_rateLimits from "../model/rateLimits.js";
import type * as model_sessions from "../model/sessions.js";
import type * as model_text from "../model/text.js";
import type * as model_users from "../model/users.js";
import type * as pairing from "../pairing.js";
import type * as presence from "../presence.js";
import type * as sessions from "../sessions.js";
import type * as users from "../users.js";

import type {
  ApiFromModules,
  FilterApi,
  FunctionReference,
} from "convex/server";

declare const fullApi: ApiFromModules<{
  accounts: typeof accounts;
  auth: typeof auth;
  avatars: typeof avatars;
  cleanup: typeof cleanup;
  crons: typeof crons;
  http: typeof http;
  "lib/sessions": typeof lib_sessions;
  limits: typeof limits;
  messages: typeof messages;
  "model/accounts": typeof model_accounts;
  "model/avatars": typeof model_avatars;
  "model/cleanup": typeof model_cleanup;
  "model/expiry": typeof model_expiry;
  "model/messages": typeof model_messages;
  "model/pairing": typeof model_pairing;
  "model/passwords": typeof model_passwords;
  "model/rateLimits": typeof model_rateLimits;
  "model/sessions": typeof model_sessions;
  "model/text": typeof model_text;
  "model/users": typeof model_users;
  pairing: typeof pairing;
  presence: typeof presence;
  sessions: typeof sessions;
  users: typeof users;
}>;

/**
 * A utility for referencing Convex functions in your app's public API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = api.myModule.myFunction;
 * ```
 */
export declare const api: FilterApi<
  typeof fullApi,
  FunctionReference<any, "public">
>;

/**
 * A utility for referencing Convex functions in your app's internal API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = internal.myModule.myFunction;
 * ```
 */
export declare const internal: FilterApi<
  typeof fullApi,
  FunctionReference<any, "internal">
>;

export declare const components: {
  rateLimiter: import("@convex-dev/rate-limiter/_generated/component.js").ComponentApi<"rateLimiter">;
  presence: import("@convex-dev/presence/_generated/component.js").ComponentApi<"presence">;
};
