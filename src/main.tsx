import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { ConvexProvider, ConvexReactClient } from "convex/react";
import { SessionProvider } from "convex-helpers/react/sessions";
import { App } from "./App";
import { CONVEX_URL, SESSION_MODE, SESSION_STORAGE_KEY } from "./lib/config";
import { generateSessionId, sessionStorageHook } from "./lib/sessionStorage";
import "./index.css";

const convex = new ConvexReactClient(CONVEX_URL);
const useSessionStorage = sessionStorageHook(SESSION_MODE);

const root = document.getElementById("root");
if (!root)
  throw new Error('index.html needs a <div id="root"> to render into.');

createRoot(root).render(
  <StrictMode>
    <ConvexProvider client={convex}>
      <SessionProvider
        useStorage={useSessionStorage}
        storageKey={SESSION_STORAGE_KEY}
        idGenerator={generateSessionId}
      >
        <App />
      </SessionProvider>
    </ConvexProvider>
  </StrictMode>,
);
