/** Convex Auth's tables, nothing else: the library as its docs set it up. */
import { authTables } from "@convex-dev/auth/server";
import { defineSchema } from "convex/server";

export default defineSchema({ ...authTables });
