/**
 * Members' profile pictures, through file storage. The page asks for an
 * upload URL, POSTs the file to it, then calls `setAvatar` with the storage
 * id; `messages.list` resolves each author's picture URL when it is read, so
 * a new picture shows beside old messages, live, everywhere.
 *
 * `setAvatar` is an action because a refused upload must be deleted: a
 * mutation that deletes a file and then throws rolls the delete back with
 * everything else (docs.convex.dev/file-storage/delete-files: deletes in
 * mutations are transactional), while an action's `ctx.storage.delete` is
 * done when it returns. The action also reads the file's first bytes, which
 * only actions can (`ctx.storage.get`).
 */
import { vSessionId } from "convex-helpers/server/sessions";
import { ConvexError, v } from "convex/values";
import { internal } from "./_generated/api";
import { action, internalQuery } from "./_generated/server";
import {
  internalMutationWithSession,
  mutationWithSession,
} from "./lib/sessions";
import {
  assertMember,
  avatarTypeRefusal,
  checkAvatarMetadata,
  matchesSignature,
  saveAvatar,
  SIGNATURE_BYTES,
} from "./model/avatars";

/**
 * A one-time URL to POST a picture to (valid for an hour).
 *
 * @throws ConvexError AVATAR_MEMBERS_ONLY for a guest.
 */
export const generateUploadUrl = mutationWithSession({
  args: {},
  returns: v.string(),
  handler: async (ctx) => {
    assertMember(ctx.user);
    return await ctx.storage.generateUploadUrl();
  },
});

/**
 * Makes the uploaded file `storageId` the caller's picture, replacing (and
 * deleting) the old one. A file that is not a picture the chat accepts is
 * deleted, and the call throws.
 *
 * @throws ConvexError AVATAR_TYPE (not PNG, JPEG, WebP or GIF, by its
 *   Content-Type or its first bytes), AVATAR_TOO_LARGE (over 2 MiB),
 *   AVATAR_MEMBERS_ONLY for a guest, AVATAR_IN_USE for someone's picture.
 */
export const setAvatar = action({
  args: { sessionId: vSessionId, storageId: v.id("_storage") },
  returns: v.null(),
  handler: async (ctx, { sessionId, storageId }) => {
    const file = await ctx.runQuery(internal.avatars.fileInfo, { storageId });
    let refusal = checkAvatarMetadata(file);
    if (refusal === null) {
      const blob = await ctx.storage.get(storageId);
      const head = new Uint8Array(
        (await blob?.slice(0, SIGNATURE_BYTES).arrayBuffer()) ??
          new ArrayBuffer(0),
      );
      if (!matchesSignature(file!.contentType!, head)) {
        refusal = avatarTypeRefusal();
      }
    }
    if (refusal !== null) {
      await ctx.storage.delete(storageId);
      throw refusal;
    }
    try {
      await ctx.runMutation(internal.avatars.save, { sessionId, storageId });
    } catch (error) {
      // A guest's upload is no one's; someone's picture (AVATAR_IN_USE) stays.
      if (
        error instanceof ConvexError &&
        (error.data as { code?: unknown }).code === "AVATAR_MEMBERS_ONLY"
      ) {
        await ctx.storage.delete(storageId);
      }
      throw error;
    }
    return null;
  },
});

export const fileInfo = internalQuery({
  args: { storageId: v.id("_storage") },
  handler: (ctx, { storageId }) => ctx.db.system.get("_storage", storageId),
});

export const save = internalMutationWithSession({
  args: { storageId: v.id("_storage") },
  returns: v.null(),
  handler: async (ctx, { storageId }) => {
    await saveAvatar(ctx, ctx.user, storageId);
    return null;
  },
});
