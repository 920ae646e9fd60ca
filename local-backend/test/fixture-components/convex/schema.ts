/** The app's own `notes` table: the `notes` component has a table of the same name. */
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  notes: defineTable({ text: v.string() }),
});
