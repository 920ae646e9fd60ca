/**
 * The file-storage and search fixture: `documents` for text search (a corpus
 * with filter fields and a staged index), `embeddings` for vector search, and
 * the staged database index that Convex refuses to query.
 */
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export const documentFields = {
  title: v.string(),
  body: v.string(),
  channel: v.string(),
  priority: v.optional(v.number()),
};

export const embeddingFields = {
  vector: v.array(v.float64()),
  kind: v.string(),
  n: v.number(),
};

export default defineSchema({
  documents: defineTable(documentFields)
    .searchIndex("search_body", {
      searchField: "body",
      filterFields: ["channel", "priority"],
    })
    .searchIndex("search_title", { searchField: "title", staged: true })
    .index("by_channel", { fields: ["channel"], staged: true }),
  embeddings: defineTable(embeddingFields)
    .vectorIndex("by_vector", {
      vectorField: "vector",
      dimensions: 4,
      filterFields: ["kind", "n"],
    })
    .vectorIndex("by_vector_staged", {
      vectorField: "vector",
      dimensions: 4,
      staged: true,
    }),
});
