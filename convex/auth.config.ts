// Convex Auth signs its own JWTs; the deployment trusts them through its site
// URL (labs.convex.dev/auth/setup/manual).
export default {
  providers: [
    {
      // auth.config.ts is read when the app is pushed, not by a function,
      // so the typed `env` of `_generated/server` does not apply here.
      // eslint-disable-next-line @convex-dev/no-process-env
      domain: process.env.CONVEX_SITE_URL,
      applicationID: "convex",
    },
  ],
};
