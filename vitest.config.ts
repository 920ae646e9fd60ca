import { defineConfig } from "vitest/config";

// One config, one project per environment (as convex-demos/convex-test does):
// - convex: the app's functions under convex-test, in the edge runtime Convex uses
// - local-backend: the embedded backend's unit and integration tests, in Node
// - e2e: the whole system (real backend, real clients, real Chromium), one file at a time
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "convex",
          include: ["convex/**/*.test.ts"],
          environment: "edge-runtime",
          server: { deps: { inline: ["convex-test"] } },
          // The rate-limit and clean-up tests make hundreds of calls; on a
          // busy 2-core machine that can pass the 5 s default.
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: "local-backend",
          include: ["local-backend/**/*.test.ts"],
          environment: "node",
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["e2e/**/*.test.ts"],
          environment: "node",
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
