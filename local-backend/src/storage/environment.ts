/**
 * Deployment environment variables, persisted as `env.json` in the data folder.
 *
 * Names, values and limits follow Convex (convex-backend
 * `crates/common/src/types/environment_variables.rs`): names match
 * `^[a-zA-Z_]+[a-zA-Z0-9_]*$` and are at most 40 characters, values at most
 * 8 KiB, at most 100 variables, and the built-ins cannot be set.
 *
 * Durability: every change rewrites the file through a temporary file, fsync
 * and rename, so a crash leaves the old or the new set, never half of one.
 * A running backend picks up changes by watching the data folder
 * (`watchEnvironment`), so `npm run backend -- env set` needs no running
 * backend, no port and no key: whoever can write the data folder is its admin.
 *
 * Usage:
 *   const store = new EnvironmentStore(dataDir);
 *   store.set("OPENAI_KEY", "sk-…");       // throws EnvironmentError on bad input
 *   const stop = store.watch((vars) => reinstall(vars));
 */
import fs from "node:fs";
import path from "node:path";

export const ENV_VAR_LIMIT = 100;
export const MAX_NAME_LENGTH = 40;
export const MAX_VALUE_LENGTH = 8 * 1024;
/** Set by the backend itself (convex-backend `env_var_name_forbidden`). */
export const BUILTIN_ENV_VARS = ["CONVEX_CLOUD_URL", "CONVEX_SITE_URL"];
const FILE_NAME = "env.json";
const NAME_PATTERN = /^[a-zA-Z_]+[a-zA-Z0-9_]*$/;
const WATCH_DEBOUNCE_MS = 20;

/** A refused change, with Convex's error code and message. */
export class EnvironmentError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "EnvironmentError";
  }
}

export type EnvironmentVariables = Record<string, string>;

export function validateEnvName(name: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new EnvironmentError(
      "EnvironmentVariableNameInvalid",
      `The environment variable name ${name} is invalid. Environment variable names must begin with a letter and may only include characters a-z, A-Z, 0-9, and underscores.`,
    );
  }
  if (name.length > MAX_NAME_LENGTH) {
    throw new EnvironmentError(
      "EnvironmentVariableNameTooLong",
      `The environment variable name ${name} is too long. Environment variable names must be less than ${MAX_NAME_LENGTH}.`,
    );
  }
  if (BUILTIN_ENV_VARS.includes(name)) {
    throw new EnvironmentError(
      "EnvVarNameForbidden",
      `Environment variable with name "${name}" is built-in and cannot be overridden`,
    );
  }
}

export function validateEnvValue(value: string): void {
  const bytes = Buffer.byteLength(value, "utf8");
  if (bytes > MAX_VALUE_LENGTH) {
    // Convex's text, unbalanced parenthesis included.
    throw new EnvironmentError(
      "EnvironmentVariableValueTooLarge",
      `The environment variable value is ${bytes} bytes, which is too large. (max size: ${MAX_VALUE_LENGTH}`,
    );
  }
}

export class EnvironmentStore {
  readonly #dir: string;
  readonly #file: string;

  constructor(dataDir: string) {
    this.#dir = path.resolve(dataDir);
    this.#file = path.join(this.#dir, FILE_NAME);
  }

  /** The persisted variables; none when the file does not exist yet. */
  list(): EnvironmentVariables {
    let text: string;
    try {
      text = fs.readFileSync(this.#file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
      throw error;
    }
    const parsed = JSON.parse(text) as unknown;
    if (
      parsed === null ||
      typeof parsed !== "object" ||
      Array.isArray(parsed) ||
      Object.values(parsed).some((v) => typeof v !== "string")
    ) {
      throw new Error(
        `${this.#file} is not a JSON object of strings; fix or delete it`,
      );
    }
    return parsed as EnvironmentVariables;
  }

  get(name: string): string | undefined {
    const vars = this.list();
    return Object.hasOwn(vars, name) ? vars[name] : undefined;
  }

  set(name: string, value: string): void {
    this.update({ [name]: value });
  }

  /** Applies several changes at once (`null` removes); all or nothing. */
  update(changes: Record<string, string | null>): void {
    const vars = this.list();
    for (const [name, value] of Object.entries(changes)) {
      if (value === null) {
        delete vars[name];
        continue;
      }
      validateEnvName(name);
      validateEnvValue(value);
      vars[name] = value;
    }
    if (Object.keys(vars).length > ENV_VAR_LIMIT) {
      throw new EnvironmentError(
        "EnvVarLimitMet",
        `The environment variable limit (${ENV_VAR_LIMIT}) has been met.`,
      );
    }
    this.#write(vars);
  }

  /** Removes `name`; returns whether it was set. */
  remove(name: string): boolean {
    const vars = this.list();
    if (!Object.hasOwn(vars, name)) return false;
    delete vars[name];
    this.#write(vars);
    return true;
  }

  /**
   * Calls `onChange` with the new variables after the file changes (by this
   * process or another). Unreadable states (a hand edit mid-way) are skipped
   * until the file is valid again. Returns a function that stops watching.
   */
  watch(
    onChange: (vars: EnvironmentVariables) => void,
    onError: (error: Error) => void = () => undefined,
  ): () => void {
    fs.mkdirSync(this.#dir, { recursive: true });
    let last = JSON.stringify(this.#safeList());
    let timer: NodeJS.Timeout | undefined;
    // The folder, not the file: an atomic rename replaces the file's inode,
    // which a watch on the file itself would stop following.
    const watcher = fs.watch(this.#dir, (_event, file) => {
      if (file !== null && file !== FILE_NAME) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        let vars: EnvironmentVariables;
        try {
          vars = this.list();
        } catch (error) {
          onError(error as Error);
          return;
        }
        const text = JSON.stringify(vars);
        if (text === last) return;
        last = text;
        onChange(vars);
      }, WATCH_DEBOUNCE_MS);
    });
    watcher.on("error", (error) => onError(error));
    return () => {
      clearTimeout(timer);
      watcher.close();
    };
  }

  #safeList(): EnvironmentVariables | null {
    try {
      return this.list();
    } catch {
      return null;
    }
  }

  #write(vars: EnvironmentVariables): void {
    fs.mkdirSync(this.#dir, { recursive: true });
    const sorted = Object.fromEntries(
      Object.entries(vars).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    );
    const tmp = `${this.#file}.${process.pid}.tmp`;
    // Values are secrets: readable by the owner only.
    const fd = fs.openSync(tmp, "w", 0o600);
    try {
      fs.writeSync(fd, `${JSON.stringify(sorted, null, 2)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.#file);
    const dirFd = fs.openSync(this.#dir, "r");
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
  }
}

/**
 * Reads a dotenv file for `--env-file`: `NAME=value` lines, `#` comments,
 * optional `export `, and single- or double-quoted values (`\n` expands in
 * double quotes), as the Convex CLI's `env set --from-file` accepts.
 */
export function parseEnvFile(text: string): EnvironmentVariables {
  const vars: EnvironmentVariables = {};
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = /^(?:export\s+)?([^=\s]+)\s*=\s*(.*)$/.exec(line);
    if (match === null) {
      throw new EnvironmentError(
        "EnvFileInvalid",
        `Line ${i + 1} of the env file is not NAME=value`,
      );
    }
    let value = match[2];
    const quote = value[0];
    if ((quote === '"' || quote === "'") && value.endsWith(quote)) {
      value = value.slice(1, -1);
      if (quote === '"') value = value.replace(/\\n/g, "\n");
    } else {
      value = value.replace(/\s+#.*$/, "");
    }
    vars[match[1]] = value;
  }
  return vars;
}
