/**
 * Limits and error codes shared with the web client. This module has no
 * imports, so `src/` can import it without pulling in server code.
 *
 * Every expected failure of a public function is a `ConvexError` whose `data`
 * is one of {@link ErrorData}; the UI switches on `data.code` and writes its
 * own words (`message` is a fallback for logs and other clients).
 *
 * ```ts
 * if (error instanceof ConvexError && error.data.code === "NAME_TOO_LONG") ...
 * ```
 */

/** The longest display name, in user-perceived characters. */
export const NAME_MAX_CHARS = 40;

/** The longest message body, in user-perceived characters. */
export const MESSAGE_MAX_CHARS = 2000;

export type ErrorData =
  | { code: "INVALID_SESSION"; message: string }
  | { code: "NAME_EMPTY"; message: string }
  | { code: "NAME_TOO_LONG"; max: number; message: string }
  | { code: "NAME_INVALID_CHARACTERS"; message: string }
  | { code: "MESSAGE_EMPTY"; message: string }
  | { code: "MESSAGE_TOO_LONG"; max: number; message: string };

export type ErrorCode = ErrorData["code"];
