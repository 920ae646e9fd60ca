interface ImportMetaEnv {
  /** Convex deployment URL; defaults to the embedded local backend. */
  readonly VITE_CONVEX_URL?: string;
  /** "shared" (default) or "tab": where the session secret is kept. */
  readonly VITE_SESSION_STORAGE?: string;
}

interface ImportMeta {
  readonly env: ImportMetaEnv;
}
