/** Convex Auth's routes: OIDC discovery and the JWKS. */
import { httpRouter } from "convex/server";
import { auth } from "./auth";

const http = httpRouter();
auth.addHttpRoutes(http);
export default http;
