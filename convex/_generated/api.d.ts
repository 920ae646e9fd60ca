/* eslint-disable */
/**
 * Generated `api` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `npx convex dev`.
 * @module
 */

import type {
  ApiFromModules,
  FilterApi,
  FunctionReference,
} from "convex/server";
import type * as cleanup from "../cleanup.js";
import type * as crons from "../crons.js";
import type * as lib_components from "../lib/components.js";
import type * as lib_sessions from "../lib/sessions.js";
import type * as limits from "../limits.js";
import type * as messages from "../messages.js";
import type * as model_cleanup from "../model/cleanup.js";
import type * as model_expiry from "../model/expiry.js";
import type * as model_messages from "../model/messages.js";
import type * as model_pairing from "../model/pairing.js";
import type * as model_rateLimits from "../model/rateLimits.js";
import type * as model_sessions from "../model/sessions.js";
import type * as model_text from "../model/text.js";
import type * as model_users from "../model/users.js";
import type * as pairing from "../pairing.js";
import type * as presence from "../presence.js";
import type * as sessions from "../sessions.js";
import type * as users from "../users.js";

/**
 * A utility for referencing Convex functions in your app's API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = api.myModule.myFunction;
 * ```
 */
declare const fullApi: ApiFromModules<{
  cleanup: typeof cleanup;
  crons: typeof crons;
  "lib/components": typeof lib_components;
  "lib/sessions": typeof lib_sessions;
  limits: typeof limits;
  messages: typeof messages;
  "model/cleanup": typeof model_cleanup;
  "model/expiry": typeof model_expiry;
  "model/messages": typeof model_messages;
  "model/pairing": typeof model_pairing;
  "model/rateLimits": typeof model_rateLimits;
  "model/sessions": typeof model_sessions;
  "model/text": typeof model_text;
  "model/users": typeof model_users;
  pairing: typeof pairing;
  presence: typeof presence;
  sessions: typeof sessions;
  users: typeof users;
}>;
export declare const api: FilterApi<
  typeof fullApi,
  FunctionReference<any, "public">
>;
export declare const internal: FilterApi<
  typeof fullApi,
  FunctionReference<any, "internal">
>;
