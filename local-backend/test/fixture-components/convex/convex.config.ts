/**
 * The components fixture: two components from npm, unmodified, and a local
 * one (`notes`, which itself uses `tally`) installed twice under two names.
 */
import presence from "@convex-dev/presence/convex.config.js";
import rateLimiter from "@convex-dev/rate-limiter/convex.config.js";
import { defineApp } from "convex/server";
import notes from "./components/notes/convex.config.ts";

const app = defineApp();
app.use(rateLimiter);
app.use(presence);
app.use(notes);
app.use(notes, { name: "archive", env: { NOTES_LABEL: "archive" } });
export default app;
