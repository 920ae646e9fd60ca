"use node";
/** `"use node"` actions: Node built-ins, calls back into the isolate, errors, runaways. */
import { createHash, randomBytes } from "node:crypto";
import os from "node:os";
import { createFunctionHandle, makeFunctionReference } from "convex/server";
import { ConvexError, v } from "convex/values";
import { action } from "./lib/functions";

const addNote = makeFunctionReference<
  "mutation",
  { body: string; digest: string },
  string
>("notes:add");
const whoami = makeFunctionReference<
  "query",
  Record<string, never>,
  string | null
>("notes:whoami");
const digestRef = makeFunctionReference<
  "action",
  { body: string },
  { digest: string; id: string }
>("crypto:digest");

export const digest = action({
  args: { body: v.string() },
  handler: async (ctx, { body }) => {
    const digest = createHash("sha256").update(body).digest("hex");
    const id = await ctx.runMutation(addNote, { body, digest });
    return {
      digest,
      id,
      random: randomBytes(16).length,
      base64: Buffer.from(body).toString("base64"),
      platform: os.platform(),
    };
  },
});

export const env = action({
  args: { name: v.string() },
  handler: (_ctx, { name }) => process.env[name] ?? null,
});

export const identity = action({
  args: {},
  handler: async (ctx) => ({
    own: (await ctx.auth.getUserIdentity())?.subject ?? null,
    nested: await ctx.runQuery(whoami, {}),
  }),
});

export const logs = action({
  args: {},
  handler: () => {
    console.log("from node", { n: 1 });
    console.warn("careful");
    return null;
  },
});

export const fail = action({
  args: {},
  handler: () => {
    throw new Error("boom from node");
  },
});

export const failConvex = action({
  args: {},
  handler: () => {
    throw new ConvexError({ code: "NODE_REFUSED" });
  },
});

export const exit = action({
  args: {},
  handler: () => {
    process.exit(3);
  },
});

/** An exception nothing catches ends the worker, mid-action. */
export const throwLater = action({
  args: {},
  handler: async () => {
    setTimeout(() => {
      throw new Error("late boom");
    }, 0);
    await new Promise((resolve) => setTimeout(resolve, 60_000));
  },
});

/** Waits past any limit without blocking: its own timer ends it, as in Convex's Node executor. */
export const sleep = action({
  args: {},
  handler: async () => {
    await new Promise((resolve) => setTimeout(resolve, 600_000));
  },
});

export const spin = action({
  args: {},
  handler: () => {
    for (;;) {
      // A runaway: only terminating the worker stops it.
    }
  },
});

/** A node action calling a node action: the caller's worker waits on the callee's. */
export const twice = action({
  args: { body: v.string() },
  handler: async (ctx, { body }) => {
    const first = await ctx.runAction(digestRef, { body });
    const second = await ctx.runAction(digestRef, { body: `${body}!` });
    return [first.digest, second.digest];
  },
});

export const storage = action({
  args: { text: v.string() },
  handler: async (ctx, { text }) => {
    const id = await ctx.storage.store(
      new Blob([Buffer.from(text)], { type: "text/plain" }),
    );
    const blob = await ctx.storage.get(id);
    const url = await ctx.storage.getUrl(id);
    const metadata = await ctx.storage.getMetadata(id);
    await ctx.storage.delete(id);
    return {
      text: await blob!.text(),
      type: blob!.type,
      hasUrl: url !== null,
      size: metadata?.size ?? null,
      afterDelete: await ctx.storage.getUrl(id),
    };
  },
});

export const schedule = action({
  args: { body: v.string() },
  handler: async (ctx, { body }) => {
    await ctx.scheduler.runAfter(0, addNote, { body, digest: "scheduled" });
    return null;
  },
});

export const viaHandle = action({
  args: { body: v.string() },
  handler: async (ctx, { body }) => {
    const handle = await createFunctionHandle(addNote);
    await ctx.runMutation(handle, { body, digest: "handle" });
    return handle.startsWith("function://");
  },
});
