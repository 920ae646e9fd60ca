/**
 * The account controls of the chat page, as a person uses them: the sign-up
 * and sign-in dialog, the member badge, the two sign-outs and the picture
 * upload, found by roles and labels. Waits are on the page, never on time.
 *
 * ```ts
 * await signUp(page, "ada@example.test", PASSWORD);
 * await signOut(page, { forget: true });
 * ```
 */
import type { Locator, Page } from "playwright-core";
import type { PageGlobals } from "./pageGlobals.ts";

export const PASSWORD = "correct horse battery";

export function accountDialog(page: Page, title: RegExp | string): Locator {
  return page.getByRole("dialog", { name: title });
}

/** The "Sign out" button, shown only to a signed-in member. */
export function signOutButton(page: Page): Locator {
  return page.getByRole("button", { name: "Sign out", exact: true });
}

export function signUpButton(page: Page): Locator {
  return page.getByRole("button", { name: "Sign up to keep your name" });
}

/** Fills the dialog for `flow` and submits it; does not wait for the result. */
export async function submitAccountForm(
  page: Page,
  flow: "signUp" | "signIn",
  email: string,
  password: string,
): Promise<Locator> {
  const titles = ["Sign up to keep your name", "Sign in"];
  const [title, otherTitle] = flow === "signUp" ? titles : titles.reverse();
  const dialog = accountDialog(page, title);
  const other = accountDialog(page, otherTitle);
  if (await other.isVisible()) {
    await other
      .getByRole("button", {
        name: flow === "signUp" ? "Sign up instead" : "Sign in instead",
      })
      .click();
  } else if (!(await dialog.isVisible())) {
    await (
      flow === "signUp"
        ? signUpButton(page)
        : page.getByRole("button", { name: "Sign in", exact: true })
    ).click();
  }
  await dialog.waitFor();
  await dialog.getByLabel("E-mail").fill(email);
  await dialog.getByLabel("Password").fill(password);
  await dialog
    .getByRole("button", {
      name: flow === "signUp" ? "Sign up" : "Sign in",
      exact: true,
    })
    .click();
  return dialog;
}

/** Signs up through the dialog and waits for the member badge. */
export async function signUp(
  page: Page,
  email: string,
  password = PASSWORD,
): Promise<void> {
  await completeAccountForm(page, "signUp", email, password);
}

/** Signs in through the dialog and waits for the member badge. */
export async function signIn(
  page: Page,
  email: string,
  password = PASSWORD,
): Promise<void> {
  await completeAccountForm(page, "signIn", email, password);
}

async function completeAccountForm(
  ...args: Parameters<typeof submitAccountForm>
): Promise<void> {
  const dialog = await submitAccountForm(...args);
  await signOutButton(args[0]).waitFor();
  await dialog.waitFor({ state: "hidden" });
}

/** Signs out and waits until the page offers sign-up again (a guest). */
export async function signOut(
  page: Page,
  { forget }: { forget: boolean },
): Promise<void> {
  await page
    .getByRole("button", {
      name: forget ? "Sign out and forget this device" : "Sign out",
      exact: true,
    })
    .click();
  await signUpButton(page).waitFor();
}

export type StoredAuth = {
  /** Convex Auth's access token (a JWT) and refresh token, if any. */
  jwt: string | null;
  refreshToken: string | null;
  /** Every key in localStorage, to check what "forget" leaves. */
  keys: string[];
};

/** What Convex Auth keeps in the page's localStorage (`react/client.tsx`). */
export async function storedAuth(page: Page): Promise<StoredAuth> {
  return await page.evaluate(() => {
    const { localStorage } = globalThis as unknown as PageGlobals;
    const keys = Array.from({ length: localStorage.length }, (_, i) =>
      localStorage.key(i),
    ).filter((key): key is string => key !== null);
    const find = (prefix: string) => {
      const key = keys.find((k) => k.startsWith(prefix));
      return key === undefined ? null : localStorage.getItem(key);
    };
    return {
      jwt: find("__convexAuthJWT_"),
      refreshToken: find("__convexAuthRefreshToken_"),
      keys,
    };
  });
}
