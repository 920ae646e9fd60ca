/** The crons fixture: one `ticks` row per cron run, named by its job. */
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  ticks: defineTable({ job: v.string() }).index("by_job", ["job"]),
});
