/** The Node-actions fixture: notes that `"use node"` actions write through mutations. */
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  notes: defineTable({ body: v.string(), digest: v.string() }),
});
