/**
 * How `console.*` arguments become log-line text, as in Convex's runtime:
 * every argument goes through `object-inspect` with `{indent: 2,
 * maxStringLength: 32768}` (convex-backend `udf-runtime/src/02_console.ts`),
 * strings included (`console.log("hi")` logs `'hi'`), and the pieces are
 * joined with spaces. This is the subset of `object-inspect` 1.x that values
 * from a function can reach; values come from another realm (the vm
 * context), so types are told by `Object.prototype.toString`, not `instanceof`.
 *
 * Also what a function's log keeps of its lines (`appendLogLine`) and how
 * `console.time` and friends word theirs (`consoleTimer`), for both runtimes
 * (the isolate and Node actions).
 *
 * Usage:
 *   formatLogArgs(["count", { n: 1 }]) === "'count' {\n  n: 1\n}"
 *   appendLogLine(request.logLines, "LOG", formatLogArgs(args));
 */

export type LogLevel = "LOG" | "INFO" | "WARN" | "ERROR" | "DEBUG";

/** convex-backend caps log lines per function execution (isolate `MAX_LOG_LINES`). */
const MAX_LOG_LINES = 256;
const MAX_LOG_LINE_CHARS = 32_768;
const MAX_STRING_LENGTH = 32768;
const MAX_DEPTH = 5;
const INDENT = "  ";

export function formatLogArgs(args: readonly unknown[]): string {
  return args.map((arg) => inspectValue(arg)).join(" ");
}

export function inspectValue(value: unknown): string {
  return inspect(value, 0, []);
}

function inspect(value: unknown, depth: number, seen: object[]): string {
  switch (typeof value) {
    case "undefined":
      return "undefined";
    case "boolean":
      return String(value);
    case "number":
      return value === 0 && 1 / value < 0 ? "-0" : String(value);
    case "bigint":
      return `${value}n`;
    case "string":
      return inspectString(value);
    case "symbol":
      return value.toString();
    case "function": {
      const name = (value as { name?: unknown }).name;
      const keys = ownKeys(value, depth, seen);
      const tag =
        typeof name === "string" && name !== ""
          ? `[Function: ${name}]`
          : "[Function (anonymous)]";
      return keys.length === 0 ? tag : `${tag} { ${keys.join(", ")} }`;
    }
    case "object":
      break;
  }
  if (value === null) return "null";
  const object = value;
  if (seen.includes(object)) return "[Circular]";
  const tag = Object.prototype.toString.call(object).slice(8, -1);
  if (depth >= MAX_DEPTH) return Array.isArray(object) ? "[Array]" : "[Object]";
  const inner = [...seen, object];
  if (Array.isArray(object)) {
    if (object.length === 0) return "[]";
    const items = Array.from(object, (item) => inspect(item, depth + 1, inner));
    return items.some((item) => item.includes("\n"))
      ? `[${indentedJoin(items, depth)}]`
      : `[ ${items.join(", ")} ]`;
  }
  switch (tag) {
    case "Date": {
      const time = (object as Date).getTime();
      return Number.isNaN(time)
        ? "Invalid Date"
        : (object as Date).toISOString();
    }
    case "RegExp":
      return RegExp.prototype.toString.call(object);
    case "Error": {
      const error = object as Error;
      const text = `[${error.name}: ${error.message}]`;
      const keys = ownKeys(object, depth, inner).filter(
        (k) => !k.startsWith("stack:") && !k.startsWith("message:"),
      );
      return keys.length === 0 ? text : `{ ${text} ${keys.join(", ")} }`;
    }
    case "Map": {
      const entries: string[] = [];
      for (const [k, v] of object as Map<unknown, unknown>)
        entries.push(
          `${inspect(k, depth + 1, inner)} => ${inspect(v, depth + 1, inner)}`,
        );
      return collection("Map", entries, depth);
    }
    case "Set": {
      const entries: string[] = [];
      for (const v of object as Set<unknown>)
        entries.push(inspect(v, depth + 1, inner));
      return collection("Set", entries, depth);
    }
    case "ArrayBuffer":
      return `ArrayBuffer { byteLength: ${(object as ArrayBuffer).byteLength} }`;
  }
  const keys = ownKeys(object, depth, inner);
  const proto = Object.getPrototypeOf(object) as {
    constructor?: { name?: unknown };
  } | null;
  const className = proto?.constructor?.name;
  const prefix =
    proto === null
      ? "[Object: null prototype] "
      : typeof className === "string" && className !== "Object"
        ? `${className} `
        : "";
  if (keys.length === 0) return `${prefix}{}`;
  return `${prefix}{${indentedJoin(keys, depth)}}`;
}

/** `key: value` for each own enumerable key, quoting keys that are not identifiers. */
function ownKeys(object: object, depth: number, seen: object[]): string[] {
  const out: string[] = [];
  for (const key of Object.keys(object)) {
    if (Array.isArray(object) && /^\d+$/.test(key)) continue;
    const name = /[^\w$]/.test(key) ? inspectString(key) : key;
    out.push(
      `${name}: ${inspect((object as Record<string, unknown>)[key], depth + 1, seen)}`,
    );
  }
  return out;
}

function collection(type: string, entries: string[], depth: number): string {
  return `${type} (${entries.length}) {${entries.length === 0 ? "" : indentedJoin(entries, depth)}}`;
}

function indentedJoin(items: string[], depth: number): string {
  const prev = INDENT.repeat(depth);
  const joiner = `\n${prev}${INDENT}`;
  return `${joiner}${items.join(`,${joiner}`)}\n${prev}`;
}

function inspectString(text: string): string {
  let shown = text;
  let trailer = "";
  if (text.length > MAX_STRING_LENGTH) {
    const remaining = text.length - MAX_STRING_LENGTH;
    shown = text.slice(0, MAX_STRING_LENGTH);
    trailer = `... ${remaining} more character${remaining > 1 ? "s" : ""}`;
  }
  const escaped = shown
    .replace(/(['\\])/g, "\\$1")
    // eslint-disable-next-line no-control-regex
    .replace(/[\x00-\x1f]/g, lowByte);
  return `'${escaped}'${trailer}`;
}

function lowByte(char: string): string {
  const code = char.charCodeAt(0);
  const named: Record<number, string> = {
    8: "b",
    9: "t",
    10: "n",
    12: "f",
    13: "r",
  };
  if (named[code] !== undefined) return `\\${named[code]}`;
  return `\\x${code < 0x10 ? "0" : ""}${code.toString(16).toUpperCase()}`;
}

/** Adds one line to a function's log; Convex caps both the line and the count. */
export function appendLogLine(
  logLines: string[],
  level: LogLevel,
  message: string,
): void {
  const line =
    message.length > MAX_LOG_LINE_CHARS
      ? `${message.slice(0, MAX_LOG_LINE_CHARS)} (truncated due to length)`
      : message;
  if (logLines.length < MAX_LOG_LINES) {
    logLines.push(`[${level}] ${line}`);
  } else if (logLines.length === MAX_LOG_LINES) {
    logLines.push(
      `[ERROR] Log overflow (maximum ${MAX_LOG_LINES}). Remaining log lines will be omitted.`,
    );
  }
}

/**
 * `console.time` / `timeLog` / `timeEnd` over one execution's labels, worded
 * as Convex's runtime does (convex-backend `udf-runtime/src/02_console.ts`);
 * real time, even in queries and mutations (`ops/console.rs`). Returns the
 * line to log, if any.
 */
export function consoleTimer(
  timers: Map<string, number>,
  call: "time" | "timeLog" | "timeEnd",
  label: string,
  args: readonly unknown[],
): { level: LogLevel; line: string } | null {
  if (call === "time") {
    if (!timers.has(label)) {
      timers.set(label, Date.now());
      return null;
    }
    return { level: "WARN", line: `Timer '${label}' already exists` };
  }
  const start = timers.get(label);
  if (start === undefined)
    return { level: "WARN", line: `Timer '${label}' does not exist` };
  if (call === "timeEnd") timers.delete(label);
  return {
    level: "INFO",
    line: [`${label}: ${Date.now() - start}ms`, ...args.map(inspectValue)].join(
      " ",
    ),
  };
}
