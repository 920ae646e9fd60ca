/**
 * The data folder's admin key: made on first start, kept in `admin_key`
 * (owner-readable only), and the one secret that grants admin rights
 * (internal functions, acting as a user) over `Authorization: Convex <key>`
 * and sync `Authenticate` of type Admin.
 *
 * The format is Convex's: `<instance name>|<secret>` (convex-backend
 * `format_admin_key`); the Convex CLI passes it through as an opaque string.
 *
 * Usage:
 *   const key = loadOrCreateAdminKey(dataDir, "local-backend");
 *   if (!adminKeyMatches(key, presented)) refuse();
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const FILE_NAME = "admin_key";

export function loadOrCreateAdminKey(
  dataDir: string,
  instanceName: string,
): string {
  const file = path.join(path.resolve(dataDir), FILE_NAME);
  try {
    const existing = fs.readFileSync(file, "utf8").trim();
    if (existing !== "") return existing;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const key = `${instanceName}|${randomBytes(32).toString("hex")}`;
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${key}\n`, { mode: 0o600 });
  // Two processes starting at once: the first link wins and both read it back.
  try {
    fs.linkSync(tmp, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return fs.readFileSync(file, "utf8").trim();
}

/** Constant-time comparison, so response timing does not leak the key. */
export function adminKeyMatches(expected: string, presented: string): boolean {
  const a = Buffer.from(expected);
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}
