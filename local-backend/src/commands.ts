/**
 * The CLI's commands that manage a data folder rather than serve it:
 * `env`, `admin-key` and `auth-keys`. They work on the folder's files
 * directly, so they need no running backend; a running one picks up
 * environment changes by itself (see `storage/environment.ts`).
 *
 * Output follows `npx convex env` (convex 1.48 `cli/lib/env.ts`): values on
 * stdout, confirmations on stderr.
 *
 * Usage:
 *   const status = runCommand(["env", "set", "KEY", "v"], { data: ".convex-local" }, io);
 */
import { generateKeyPairSync } from "node:crypto";
import { loadOrCreateAdminKey } from "./storage/adminKey.ts";
import { EnvironmentError, EnvironmentStore } from "./storage/environment.ts";

export type CommandIo = {
  out(line: string): void;
  err(line: string): void;
};

export const COMMANDS = ["env", "admin-key", "auth-keys"];

export const COMMAND_USAGE = `Commands (on the data folder; a running backend picks up env changes):
  env set NAME VALUE      set a deployment environment variable
  env get NAME            print its value
  env list                print NAME=value for each
  env remove NAME         remove it
  admin-key               print the admin key (Authorization: Convex <key>)
  auth-keys [--force] [--site-url URL]
                          set JWT_PRIVATE_KEY, JWKS and SITE_URL for Convex Auth,
                          as \`npx @convex-dev/auth\` does`;

/** Runs one command; returns the process exit status. */
export function runCommand(
  positionals: string[],
  options: { data: string; force?: boolean; siteUrl?: string },
  io: CommandIo,
): number {
  const [command, ...rest] = positionals;
  try {
    switch (command) {
      case "env":
        return env(rest, new EnvironmentStore(options.data), io);
      case "admin-key":
        io.out(loadOrCreateAdminKey(options.data, "local-backend"));
        return 0;
      case "auth-keys":
        return authKeys(new EnvironmentStore(options.data), options, io);
      default:
        io.err(`error: unknown command "${command}"\n\n${COMMAND_USAGE}`);
        return 1;
    }
  } catch (error) {
    if (error instanceof EnvironmentError) {
      io.err(`error: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

function env(args: string[], store: EnvironmentStore, io: CommandIo): number {
  const [action, name, value, ...extra] = args;
  const usage = () => {
    io.err(`error: usage: env set NAME VALUE | get NAME | list | remove NAME`);
    return 1;
  };
  switch (action) {
    case "set": {
      if (name === undefined || extra.length > 0) return usage();
      // `env set NAME=value` is accepted too, as by the Convex CLI.
      const [n, v] =
        value === undefined && name.includes("=")
          ? [
              name.slice(0, name.indexOf("=")),
              name.slice(name.indexOf("=") + 1),
            ]
          : [name, value];
      if (v === undefined) return usage();
      store.set(n, v);
      io.err(`✔ Successfully set ${n}`);
      return 0;
    }
    case "get": {
      if (name === undefined || value !== undefined) return usage();
      const found = store.get(name);
      if (found === undefined) {
        io.err(`✖ Environment variable "${name}" not found`);
        return 1;
      }
      io.out(found);
      return 0;
    }
    case "list": {
      if (name !== undefined) return usage();
      const vars = Object.entries(store.list());
      if (vars.length === 0) io.err("No environment variables set");
      for (const [n, v] of vars)
        io.out(`${n}=${/[\s"'#]/.test(v) ? JSON.stringify(v) : v}`);
      return 0;
    }
    case "remove":
    case "unset": {
      if (name === undefined || value !== undefined) return usage();
      store.remove(name);
      io.err(`✔ Successfully unset ${name}`);
      return 0;
    }
    default:
      return usage();
  }
}

/**
 * A fresh `JWT_PRIVATE_KEY` and `JWKS` pair, as `npx @convex-dev/auth` makes
 * them (`@convex-dev/auth` 0.0.95 `cli/generateKeys.ts`): an RS256 private
 * key as PKCS#8 PEM with newlines turned into spaces, the public key as a
 * one-key JWKS with `use: "sig"`.
 */
export function generateAuthKeys(): { JWT_PRIVATE_KEY: string; JWKS: string } {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
  });
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const jwk = publicKey.export({ format: "jwk" });
  return {
    JWT_PRIVATE_KEY: pem.trimEnd().replace(/\n/g, " "),
    JWKS: JSON.stringify({ keys: [{ use: "sig", ...jwk }] }),
  };
}

/**
 * The Convex Auth keys a data folder lacks, for `npm run dev` and the test
 * stacks to pass as `startBackend({ env })`, so sign-in works on a fresh
 * clone; keys already there are kept (replacing them signs everyone out).
 */
export function missingAuthKeys(dataDir: string): Record<string, string> {
  const existing = new EnvironmentStore(dataDir).list();
  return existing.JWT_PRIVATE_KEY !== undefined && existing.JWKS !== undefined
    ? {}
    : generateAuthKeys();
}

/**
 * What `npx @convex-dev/auth` sets: the keys of `generateAuthKeys` and the
 * page's URL.
 */
function authKeys(
  store: EnvironmentStore,
  options: { force?: boolean; siteUrl?: string },
  io: CommandIo,
): number {
  const existing = store.list();
  if (
    options.force !== true &&
    (existing.JWT_PRIVATE_KEY !== undefined || existing.JWKS !== undefined)
  ) {
    io.err(
      "error: JWT_PRIVATE_KEY or JWKS is already set; pass --force to replace them (signed-in users are signed out)",
    );
    return 1;
  }
  const changes: Record<string, string> = generateAuthKeys();
  if (options.siteUrl !== undefined || existing.SITE_URL === undefined)
    changes.SITE_URL = options.siteUrl ?? "http://localhost:5173";
  store.update(changes);
  io.err(`✔ Successfully set ${Object.keys(changes).join(", ")}`);
  return 0;
}
