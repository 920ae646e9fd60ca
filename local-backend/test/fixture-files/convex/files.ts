/** File storage from every kind of function: upload URLs, URLs, metadata, delete, store/get in actions. */
import { action, mutation, query } from "./lib/functions";
import { v } from "convex/values";

export const generateUploadUrl = mutation({
  args: {},
  handler: (ctx) => ctx.storage.generateUploadUrl(),
});

export const getUrl = query({
  args: { storageId: v.string() },
  handler: (ctx, { storageId }) => ctx.storage.getUrl(storageId),
});

export const metadata = query({
  args: { storageId: v.id("_storage") },
  handler: (ctx, { storageId }) => ctx.db.system.get("_storage", storageId),
});

export const list = query({
  args: {},
  handler: (ctx) => ctx.db.system.query("_storage").collect(),
});

export const remove = mutation({
  args: { storageId: v.id("_storage") },
  handler: (ctx, { storageId }) => ctx.storage.delete(storageId),
});

export const removeThenFail = mutation({
  args: { storageId: v.id("_storage") },
  handler: async (ctx, { storageId }) => {
    await ctx.storage.delete(storageId);
    throw new Error("rolled back");
  },
});

/** Stores bytes (base64) from an action and reads them back with their metadata. */
export const storeAndGet = action({
  args: { base64: v.string(), contentType: v.string() },
  handler: async (ctx, { base64, contentType }) => {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const storageId = await ctx.storage.store(
      new Blob([bytes], { type: contentType }),
    );
    const blob = await ctx.storage.get(storageId);
    const back = new Uint8Array(await blob!.arrayBuffer());
    return {
      storageId,
      roundTrip: btoa(String.fromCharCode(...back)),
      type: blob!.type,
      metadata: await ctx.storage.getMetadata(storageId),
      url: await ctx.storage.getUrl(storageId),
    };
  },
});

export const deleteFromAction = action({
  args: { storageId: v.id("_storage") },
  handler: async (ctx, { storageId }) => {
    await ctx.storage.delete(storageId);
    return await ctx.storage.get(storageId);
  },
});
