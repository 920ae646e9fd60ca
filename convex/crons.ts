import { cronJobs } from "convex/server";
import { internal } from "./_generated/api";
import { CLEANUP_INTERVAL_MINUTES } from "./limits";

const crons = cronJobs();

crons.interval(
  "sweep expired sessions and guests",
  { minutes: CLEANUP_INTERVAL_MINUTES },
  internal.cleanup.sweep,
  {},
);

export default crons;
