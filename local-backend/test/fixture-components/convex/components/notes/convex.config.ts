import { defineComponent } from "convex/server";
import { v } from "convex/values";
import tally from "../tally/convex.config.ts";

const component = defineComponent("notes", {
  env: { NOTES_LABEL: v.optional(v.string()) },
});
component.use(tally);
export default component;
