/* eslint-disable */
/**
 * Generated `ComponentApi` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `npx convex dev`.
 * @module
 */

import type { FunctionReference } from "convex/server";

/**
 * A utility for referencing a Convex component's exposed API.
 *
 * Useful when expecting a parameter like `components.myComponent`.
 * Usage:
 * ```ts
 * async function myFunction(ctx: QueryCtx, component: ComponentApi) {
 *   return ctx.runQuery(component.someFile.someQuery, { ...args });
 * }
 * ```
 */
export type ComponentApi<Name extends string | undefined = string | undefined> =
  {
    lib: {
      add: FunctionReference<
        "mutation",
        "internal",
        { text: string },
        string,
        Name
      >;
      callBack: FunctionReference<
        "mutation",
        "internal",
        { handle: string; text: string },
        any,
        Name
      >;
      get: FunctionReference<"query", "internal", { id: string }, any, Name>;
      list: FunctionReference<"query", "internal", {}, Array<string>, Name>;
      tally: FunctionReference<"query", "internal", {}, number, Name>;
      whereAmI: FunctionReference<"query", "internal", {}, any, Name>;
    };
  };
