// The issuer is this backend's own site URL; its discovery document and keys
// are served by the HTTP routes `auth.addHttpRoutes` adds (convex/http.ts).
export default {
  providers: [{ domain: process.env.CONVEX_SITE_URL, applicationID: "convex" }],
};
