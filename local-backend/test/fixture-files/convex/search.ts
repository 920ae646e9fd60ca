/** Text search over `documents`, its subscriptions, and the staged indexes Convex refuses to serve. */
import { paginationOptsValidator } from "convex/server";
import { mutation, query } from "./lib/functions";
import { v } from "convex/values";
import { documentFields } from "./schema";

export const insert = mutation({
  args: documentFields,
  handler: (ctx, doc) => ctx.db.insert("documents", doc),
});

export const insertMany = mutation({
  args: { docs: v.array(v.object(documentFields)) },
  handler: async (ctx, { docs }) => {
    const ids = [];
    for (const doc of docs) ids.push(await ctx.db.insert("documents", doc));
    return ids;
  },
});

export const patchBody = mutation({
  args: { id: v.id("documents"), body: v.string() },
  handler: (ctx, { id, body }) => ctx.db.patch("documents", id, { body }),
});

export const remove = mutation({
  args: { id: v.id("documents") },
  handler: (ctx, { id }) => ctx.db.delete("documents", id),
});

export const search = query({
  args: {
    text: v.string(),
    channel: v.optional(v.string()),
    priority: v.optional(v.number()),
    limit: v.optional(v.number()),
  },
  handler: async (ctx, { text, channel, priority, limit }) => {
    const results = await ctx.db
      .query("documents")
      .withSearchIndex("search_body", (q) => {
        let search = q.search("body", text);
        if (channel !== undefined) search = search.eq("channel", channel);
        if (priority !== undefined) search = search.eq("priority", priority);
        return search;
      })
      .take(limit ?? 2000);
    return results.map((doc) => doc.title);
  },
});

export const searchPage = query({
  args: { text: v.string(), paginationOpts: paginationOptsValidator },
  handler: (ctx, { text, paginationOpts }) =>
    ctx.db
      .query("documents")
      .withSearchIndex("search_body", (q) => q.search("body", text))
      .paginate(paginationOpts),
});

/** A write and a search in one mutation: the search sees the write. */
export const insertThenSearch = mutation({
  args: { title: v.string(), body: v.string(), text: v.string() },
  handler: async (ctx, { title, body, text }) => {
    await ctx.db.insert("documents", { title, body, channel: "general" });
    const results = await ctx.db
      .query("documents")
      .withSearchIndex("search_body", (q) => q.search("body", text))
      .collect();
    return results.map((doc) => doc.title);
  },
});

export const wrongField = query({
  args: {},
  handler: (ctx) =>
    ctx.db
      .query("documents")
      // @ts-expect-error: title is not the search field
      .withSearchIndex("search_body", (q) => q.search("title", "x"))
      .collect(),
});

export const unindexedFilter = query({
  args: {},
  handler: (ctx) =>
    ctx.db
      .query("documents")
      .withSearchIndex("search_body", (q) =>
        // @ts-expect-error: title is not a filter field
        q.search("body", "x").eq("title", "y"),
      )
      .collect(),
});

export const stagedSearch = query({
  args: {},
  handler: (ctx) =>
    ctx.db
      .query("documents")
      .withSearchIndex("search_title" as "search_body", (q) =>
        q.search("body", "x"),
      )
      .collect(),
});

export const stagedIndex = query({
  args: {},
  handler: (ctx) =>
    ctx.db
      .query("documents")
      .withIndex("by_channel" as "by_creation_time")
      .collect(),
});

/** Inserts `count` documents whose body is `word` then `padding` characters (one token too long to index). */
export const fill = mutation({
  args: { word: v.string(), count: v.number(), padding: v.number() },
  handler: async (ctx, { word, count, padding }) => {
    const body = padding === 0 ? word : `${word} ${"x".repeat(padding)}`;
    for (let i = 0; i < count; i++)
      await ctx.db.insert("documents", {
        title: word,
        body,
        channel: "limits",
      });
    return count;
  },
});

/** Reads `n` documents in creation order, then `k` results of a search for `text`: the read limits across both. */
export const readThenSearch = query({
  args: { n: v.number(), text: v.string(), k: v.number() },
  handler: async (ctx, { n, text, k }) => {
    let count = 0;
    if (n > 0)
      for await (const _doc of ctx.db.query("documents"))
        if (++count >= n) break;
    const found = await ctx.db
      .query("documents")
      .withSearchIndex("search_body", (q) => q.search("body", text))
      .take(k);
    return count + found.length;
  },
});
