/** The HTTP routes of the identity tests: who an HTTP action runs as. */
import { httpActionGeneric as httpAction, httpRouter } from "convex/server";

const http = httpRouter();
http.route({
  path: "/me",
  method: "GET",
  handler: httpAction(async (ctx) => {
    try {
      return Response.json({ identity: await ctx.auth.getUserIdentity() });
    } catch (error) {
      return Response.json({ refused: (error as Error).message });
    }
  }),
});
export default http;
