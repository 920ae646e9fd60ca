/** A one-minute cron expression, a one-minute interval, and an action on an interval. */
import { cronJobs, makeFunctionReference } from "convex/server";

const tick = makeFunctionReference<"mutation", { job: string }, null>(
  "ticks:tick",
);
const tickFromAction = makeFunctionReference<"action", { job: string }, null>(
  "ticks:tickFromAction",
);

const crons = cronJobs();
crons.cron("every minute", "* * * * *", tick, { job: "minute" });
crons.interval("interval", { minutes: 1 }, tick, { job: "interval" });
crons.interval("hourly action", { hours: 1 }, tickFromAction, {
  job: "action",
});
export default crons;
