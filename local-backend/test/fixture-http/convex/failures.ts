/** Functions that fail in each of the ways whose text the error tests check. */
import {
  actionGeneric,
  makeFunctionReference,
  mutationGeneric,
  queryGeneric,
} from "convex/server";
import { ConvexError } from "convex/values";

class NotAllowed extends ConvexError<{ code: string }> {
  name = "NotAllowed";
}

const crashRef = makeFunctionReference<"mutation", Record<string, never>>(
  "failures:crash",
);

export const crash = mutationGeneric({
  args: {},
  handler: () => {
    throw new Error("kaboom");
  },
});

export const subclass = mutationGeneric({
  args: {},
  handler: () => {
    throw new NotAllowed({ code: "NOPE" });
  },
});

export const nested = actionGeneric({
  args: {},
  handler: async (ctx) => {
    await ctx.runMutation(crashRef, {});
  },
});

export const consoleForms = queryGeneric({
  args: {},
  handler: () => {
    console.log("text", 1, -0, 2n, null, undefined, true);
    console.info({ a: [1, "two"], "b-c": { d: null } });
    console.warn(["x", "y"]);
    console.time("t");
    console.timeLog("t", "extra");
    console.timeEnd("t");
    console.timeEnd("t");
    console.time();
    console.time();
    return null;
  },
});
