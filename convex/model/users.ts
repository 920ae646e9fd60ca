/**
 * Users: the public identity that messages point at. The session middleware
 * creates an anonymous user on a browser's first mutation; a later sign-in can
 * fill in `tokenIdentifier` on the same row, so the user id never changes.
 */
import { ConvexError, v, type Infer } from "convex/values";
import type { Doc, Id } from "../_generated/dataModel";
import type { MutationCtx } from "../_generated/server";
import { NAME_MAX_CHARS, type ErrorData } from "../limits";
import { userFields } from "../schema";
import { isLongerThan } from "./text";

const GUEST_NUMBER_MIN = 1000;
const GUEST_NUMBER_COUNT = 9000;

/**
 * Unicode Cc, the line and paragraph separators, and the bidi controls, which
 * can make one name render as another ("User 1234" reversed by U+202E).
 */
const INVALID_NAME_CHARACTERS = /[\p{Cc}\p{Zl}\p{Zp}\p{Bidi_Control}]/u;

/** What anyone may see of a user. */
export const vProfile = v.object({
  _id: v.id("users"),
  name: userFields.name,
  isAnonymous: userFields.isAnonymous,
});

export function toProfile(user: Doc<"users">): Infer<typeof vProfile> {
  return { _id: user._id, name: user.name, isAnonymous: user.isAnonymous };
}

/** Inserts a user named "User NNNN" with a random number from 1000 to 9999. */
export async function createAnonymousUser(
  ctx: MutationCtx,
): Promise<Id<"users">> {
  return await ctx.db.insert("users", {
    name: `User ${randomGuestNumber()}`,
    isAnonymous: true,
  });
}

/**
 * Renames a user after trimming the name.
 *
 * @throws ConvexError NAME_EMPTY, NAME_TOO_LONG or NAME_INVALID_CHARACTERS.
 */
export async function setUserName(
  ctx: MutationCtx,
  userId: Id<"users">,
  rawName: string,
): Promise<void> {
  await ctx.db.patch("users", userId, { name: parseName(rawName) });
}

function parseName(rawName: string): string {
  const name = rawName.trim();
  if (name === "") {
    throw new ConvexError<ErrorData>({
      code: "NAME_EMPTY",
      message: "Your name cannot be empty.",
    });
  }
  if (INVALID_NAME_CHARACTERS.test(name)) {
    throw new ConvexError<ErrorData>({
      code: "NAME_INVALID_CHARACTERS",
      message: "Your name cannot contain line breaks or control characters.",
    });
  }
  if (isLongerThan(name, NAME_MAX_CHARS)) {
    throw new ConvexError<ErrorData>({
      code: "NAME_TOO_LONG",
      max: NAME_MAX_CHARS,
      message: `Your name can be at most ${NAME_MAX_CHARS} characters long.`,
    });
  }
  return name;
}

/** The modulo bias (about one in 477,000) does not matter for a display name. */
function randomGuestNumber(): number {
  const [random] = crypto.getRandomValues(new Uint32Array(1));
  return GUEST_NUMBER_MIN + (random % GUEST_NUMBER_COUNT);
}
