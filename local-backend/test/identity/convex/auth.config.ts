// Providers for the identity tests: an OIDC issuer the test serves on a free
// port, and a custom JWT issuer whose keys are inline (a `data:` URI).
export default {
  providers: [
    { domain: process.env.OIDC_ISSUER, applicationID: "test-app" },
    {
      type: "customJwt",
      issuer: "https://custom.example.com",
      jwks: process.env.CUSTOM_JWKS,
      algorithm: "ES256",
      applicationID: "custom-app",
    },
  ],
};
