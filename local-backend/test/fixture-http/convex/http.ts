/** HTTP actions: a byte-for-byte echo and the ways a handler fails. */
import { httpActionGeneric, httpRouter } from "convex/server";
import { ConvexError } from "convex/values";

const http = httpRouter();

http.route({
  path: "/echo",
  method: "POST",
  handler: httpActionGeneric(async (_ctx, request) => {
    const bytes = new Uint8Array(await request.arrayBuffer());
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    return new Response(bytes, {
      headers: {
        "Content-Type": "application/octet-stream",
        "X-Byte-Length": String(bytes.byteLength),
        "X-Sha256": Array.from(new Uint8Array(digest), (b) =>
          b.toString(16).padStart(2, "0"),
        ).join(""),
      },
    });
  }),
});

http.route({
  path: "/fail",
  method: "GET",
  handler: httpActionGeneric(() => {
    throw new Error("the handler failed");
  }),
});

http.route({
  path: "/convexError",
  method: "GET",
  handler: httpActionGeneric(() => {
    throw new ConvexError({ code: "NOT_ALLOWED" });
  }),
});

export default http;
