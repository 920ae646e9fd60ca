/**
 * The components installed in `convex.config.ts`, typed.
 *
 * This is what `_generated/api.ts` exports as `components` once codegen has
 * analysed the component definitions: `componentsGeneric()` at run time, the
 * packages' own `ComponentApi` types at compile time. Offline, `npm run
 * codegen` (`convex codegen --system-udfs`) skips components and emits no
 * `components` export, so the same two lines live here.
 *
 * ```ts
 * new RateLimiter(components.rateLimiter, { ... });
 * ```
 */
import type { ComponentApi as PresenceApi } from "@convex-dev/presence/_generated/component.js";
import type { ComponentApi as RateLimiterApi } from "@convex-dev/rate-limiter/_generated/component.js";
import { componentsGeneric } from "convex/server";

export const components = componentsGeneric() as unknown as {
  rateLimiter: RateLimiterApi<"rateLimiter">;
  presence: PresenceApi<"presence">;
};
