import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { ConvexAuthProvider } from "@convex-dev/auth/react";
import { ConvexReactClient } from "convex/react";
import { SessionProvider } from "convex-helpers/react/sessions";
import { App } from "./App";
import { CONVEX_URL, SESSION_MODE, SESSION_STORAGE_KEY } from "./lib/config";
import {
  generateSessionId,
  openStorage,
  sessionStorageHook,
} from "./lib/sessionStorage";
import "./index.css";

const convex = new ConvexReactClient(CONVEX_URL);
const useSessionStorage = sessionStorageHook(SESSION_MODE);
// Convex Auth's tokens live beside the session secret: per tab in "tab"
// mode, so one tab's sign-in does not sign in the others.
const authStorage = openStorage(SESSION_MODE === "tab" ? "session" : "local");

const root = document.getElementById("root");
if (!root)
  throw new Error('index.html needs a <div id="root"> to render into.');

createRoot(root).render(
  <StrictMode>
    <ConvexAuthProvider client={convex} storage={authStorage ?? undefined}>
      <SessionProvider
        useStorage={useSessionStorage}
        storageKey={SESSION_STORAGE_KEY}
        idGenerator={generateSessionId}
      >
        <App />
      </SessionProvider>
    </ConvexAuthProvider>
  </StrictMode>,
);
