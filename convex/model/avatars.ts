/**
 * Profile pictures: which uploads are accepted, and where a user's picture
 * is read from. Only members have one; guests get a picture the page draws
 * from their user id (`src/lib/guestAvatar.ts`).
 *
 * An upload is accepted when the `_storage` metadata says PNG, JPEG, WebP or
 * GIF of at most `AVATAR_MAX_BYTES`, and its first bytes are that format's
 * signature, so a renamed file or a forged Content-Type is refused too.
 *
 * ```ts
 * const refusal = checkAvatarMetadata(await ctx.db.system.get("_storage", id));
 * ```
 */
import type { DocumentByName, SystemDataModel } from "convex/server";
import { ConvexError } from "convex/values";
import type { Doc, Id } from "../_generated/dataModel";
import type { MutationCtx, QueryCtx } from "../_generated/server";
import { AVATAR_MAX_BYTES, AVATAR_TYPES, type ErrorData } from "../limits";

type AvatarType = (typeof AVATAR_TYPES)[number];

type StoredFile = DocumentByName<SystemDataModel, "_storage">;

/** How many leading bytes `matchesSignature` needs. */
export const SIGNATURE_BYTES = 12;

/** The refusal for an upload's metadata, or null when it may be a picture. */
export function checkAvatarMetadata(
  file: StoredFile | null,
): ConvexError<ErrorData> | null {
  if (file === null || !isAvatarType(file.contentType)) {
    return avatarTypeRefusal();
  }
  if (file.size > AVATAR_MAX_BYTES) {
    return new ConvexError<ErrorData>({
      code: "AVATAR_TOO_LARGE",
      max: AVATAR_MAX_BYTES,
      message: `A profile picture can be at most ${AVATAR_MAX_BYTES / 1024 / 1024} MiB.`,
    });
  }
  return null;
}

/** Whether `head` starts with the signature of `contentType`'s format. */
export function matchesSignature(
  contentType: string,
  head: Uint8Array,
): boolean {
  const starts = (bytes: number[], at = 0) =>
    bytes.every((byte, i) => head[at + i] === byte);
  const ascii = (text: string) => [...text].map((c) => c.charCodeAt(0));
  switch (contentType as AvatarType) {
    case "image/png":
      return starts([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    case "image/jpeg":
      return starts([0xff, 0xd8, 0xff]);
    case "image/gif":
      return starts(ascii("GIF87a")) || starts(ascii("GIF89a"));
    case "image/webp":
      return starts(ascii("RIFF")) && starts(ascii("WEBP"), 8);
    default:
      return false;
  }
}

export function avatarTypeRefusal(): ConvexError<ErrorData> {
  return new ConvexError<ErrorData>({
    code: "AVATAR_TYPE",
    message: "A profile picture must be a PNG, JPEG, WebP or GIF image.",
  });
}

/** @throws ConvexError AVATAR_MEMBERS_ONLY for a guest. */
export function assertMember(user: Doc<"users">): void {
  if (user.isAnonymous) {
    throw new ConvexError<ErrorData>({
      code: "AVATAR_MEMBERS_ONLY",
      message: "Sign up to upload a profile picture.",
    });
  }
}

/**
 * Makes `storageId` the member's picture and deletes the one it replaces.
 *
 * @throws ConvexError AVATAR_IN_USE when the file is someone's picture
 *   already (so no one can take over, or later delete, another's picture),
 *   AVATAR_MEMBERS_ONLY for a guest.
 */
export async function saveAvatar(
  ctx: MutationCtx,
  user: Doc<"users">,
  storageId: Id<"_storage">,
): Promise<void> {
  if (user.avatar === storageId) return;
  const owner = await ctx.db
    .query("users")
    .withIndex("by_avatar", (q) => q.eq("avatar", storageId))
    .first();
  if (owner !== null) {
    throw new ConvexError<ErrorData>({
      code: "AVATAR_IN_USE",
      message: "That picture already belongs to someone.",
    });
  }
  assertMember(user);
  await ctx.db.patch("users", user._id, { avatar: storageId });
  if (user.avatar !== undefined) await ctx.storage.delete(user.avatar);
}

/** The URL of `user`'s picture, or null when they have none. */
export async function avatarUrl(
  ctx: QueryCtx,
  user: Doc<"users">,
): Promise<string | null> {
  return user.avatar === undefined
    ? null
    : await ctx.storage.getUrl(user.avatar);
}

function isAvatarType(type: string | undefined): type is AvatarType {
  return (AVATAR_TYPES as readonly (string | undefined)[]).includes(type);
}
