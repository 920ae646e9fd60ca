import { httpRouter } from "convex/server";
import { auth } from "./auth";

const http = httpRouter();

// Convex Auth's OpenID configuration and JWKS, which the deployment uses to
// check the tokens it issues.
auth.addHttpRoutes(http);

export default http;
