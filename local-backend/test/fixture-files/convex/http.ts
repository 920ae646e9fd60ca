/** HTTP actions that store and serve files through `ctx.storage`. */
import { httpActionGeneric, httpRouter } from "convex/server";
import type { GenericId } from "convex/values";

type Id = GenericId<"_storage">;

const http = httpRouter();

http.route({
  path: "/files",
  method: "POST",
  handler: httpActionGeneric(async (ctx, request) => {
    const storageId = await ctx.storage.store(await request.blob());
    return Response.json({ storageId });
  }),
});

http.route({
  path: "/files",
  method: "GET",
  handler: httpActionGeneric(async (ctx, request) => {
    const id = new URL(request.url).searchParams.get("id") as Id;
    const blob = await ctx.storage.get(id);
    return blob === null
      ? new Response("not found", { status: 404 })
      : new Response(blob, { headers: { "Content-Type": blob.type } });
  }),
});

export default http;
