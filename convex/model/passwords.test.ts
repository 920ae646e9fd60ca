import { expect, test } from "vitest";
import { PASSWORD_MIN_CHARS } from "../limits";
import { expectErrorCode } from "../test.setup";
import {
  checkNewPassword,
  hashPassword,
  normalizeEmail,
  verifyPassword,
} from "./passwords";

test("a stored password verifies only the same password, and names its parameters", async () => {
  const stored = await hashPassword("correct horse battery");

  expect(stored).toMatch(
    /^pbkdf2-sha512\$100000\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/,
  );
  expect(stored).not.toContain("correct horse");
  expect(await verifyPassword("correct horse battery", stored)).toBe(true);
  expect(await verifyPassword("correct horse batterY", stored)).toBe(false);
  expect(await hashPassword("correct horse battery")).not.toBe(stored);
});

test("a new password needs at least 8 characters", async () => {
  expect(checkNewPassword("x".repeat(PASSWORD_MIN_CHARS))).toHaveLength(8);
  const data = await expectErrorCode(
    Promise.resolve().then(() => checkNewPassword("seven77")),
    "PASSWORD_TOO_WEAK",
  );
  expect(data).toMatchObject({ min: PASSWORD_MIN_CHARS });
});

test("e-mail addresses are trimmed and lowercased; a malformed one is refused", async () => {
  expect(normalizeEmail("  Ada@Example.COM ")).toBe("ada@example.com");
  await expectErrorCode(
    Promise.resolve().then(() => normalizeEmail("ada")),
    "EMAIL_INVALID",
  );
});
