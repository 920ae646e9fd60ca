/// <reference types="vite/client" />
/**
 * Shared by the convex-test suites: the function modules to load, and helpers
 * for callers and errors. Two dots in the name, so Convex never deploys it.
 */
import type { SessionId } from "convex-helpers/server/sessions";
import presenceTest from "@convex-dev/presence/test";
import rateLimiterTest from "@convex-dev/rate-limiter/test";
import { convexTest, type TestConvex } from "convex-test";
import { ConvexError } from "convex/values";
import { expect } from "vitest";
import type { Doc, TableNames } from "./_generated/dataModel";
import type { ErrorCode, ErrorData } from "./limits";
import schema from "./schema";

export const modules = import.meta.glob("./**/*.*s");

/** A fresh deployment with the app's components (`convex.config.ts`). */
export function newTest(): TestConvex<typeof schema> {
  const t = convexTest(schema, modules);
  rateLimiterTest.register(t);
  presenceTest.register(t);
  return t;
}

/** More rows than any test writes, so `rowsOf` never truncates. */
const MAX_TEST_ROWS = 1000;

/** A fresh browser identity, made the way `<SessionProvider>` makes one. */
export function newSessionId(): SessionId {
  return crypto.randomUUID() as SessionId;
}

/** Lowercase hex SHA-256, computed independently of `lib/sessions.ts`. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return [...new Uint8Array(digest)]
    .map((byte) => byte.toString(16).padStart(2, "0"))
    .join("");
}

/** The error `call` rejects with; fails the test if it resolves. */
export async function rejection(call: Promise<unknown>): Promise<unknown> {
  return await call.then(
    () => expect.fail("expected the call to throw"),
    (error: unknown) => error,
  );
}

/** Asserts that `call` throws a `ConvexError` with `code`, and returns its data. */
export async function expectErrorCode(
  call: Promise<unknown>,
  code: ErrorCode,
): Promise<ErrorData> {
  const error = await rejection(call);
  expect(error).toBeInstanceOf(ConvexError);
  const { data } = error as ConvexError<ErrorData>;
  expect(data.code).toBe(code);
  expect(typeof data.message).toBe("string");
  return data;
}

/** Every row of `table`. */
export async function rowsOf<TableName extends TableNames>(
  t: TestConvex<typeof schema>,
  table: TableName,
): Promise<Doc<TableName>[]> {
  return await t.run((ctx) => ctx.db.query(table).take(MAX_TEST_ROWS));
}

/** Every row of every table in the schema, keyed by table name. */
export async function allRows(
  t: TestConvex<typeof schema>,
): Promise<Record<string, unknown[]>> {
  const tables = Object.keys(schema.tables) as TableNames[];
  return Object.fromEntries(
    await Promise.all(
      tables.map(async (table) => [table, await rowsOf(t, table)] as const),
    ),
  );
}
