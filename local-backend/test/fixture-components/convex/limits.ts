/** `@convex-dev/rate-limiter` as its README uses it. */
import { components } from "./_generated/api";
import { MINUTE, RateLimiter } from "@convex-dev/rate-limiter";
import { v } from "convex/values";
import { mutation, query } from "./_generated/server";

const rateLimiter = new RateLimiter(components.rateLimiter, {
  send: { kind: "fixed window", rate: 2, period: MINUTE },
  burst: { kind: "token bucket", rate: 3, period: MINUTE, capacity: 3 },
});

export const send = mutation({
  args: {
    key: v.string(),
    name: v.union(v.literal("send"), v.literal("burst")),
  },
  handler: (ctx, { key, name }) => rateLimiter.limit(ctx, name, { key }),
});

export const sendOrThrow = mutation({
  args: { key: v.string() },
  handler: (ctx, { key }) =>
    rateLimiter.limit(ctx, "send", { key, throws: true }),
});

export const check = query({
  args: { key: v.string() },
  handler: (ctx, { key }) => rateLimiter.check(ctx, "send", { key }),
});
