/**
 * A member's profile picture upload: the file goes straight to file storage
 * through a one-time URL, then `avatars.setAvatar` checks it on the server
 * (type by Content-Type and first bytes, size) and makes it the picture shown
 * beside every message of theirs, everywhere. The same limits are checked
 * here first, so a wrong file is refused without uploading it.
 */
import { useId, useRef, useState } from "react";
import {
  useSessionAction,
  useSessionMutation,
} from "convex-helpers/react/sessions";
import { api } from "../../convex/_generated/api";
import type { Id } from "../../convex/_generated/dataModel";
import { AVATAR_MAX_BYTES, AVATAR_TYPES } from "../../convex/limits";
import { avatarErrorText, describeRefusal } from "../lib/errors";

export function AvatarUpload({ hasPicture }: { hasPicture: boolean }) {
  const generateUploadUrl = useSessionMutation(api.avatars.generateUploadUrl);
  const setAvatar = useSessionAction(api.avatars.setAvatar);
  const inputId = useId();
  const errorId = useId();
  const inputRef = useRef<HTMLInputElement>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function upload(file: File) {
    if (!(AVATAR_TYPES as readonly string[]).includes(file.type)) {
      setError(describeRefusal({ code: "AVATAR_TYPE" }));
      return;
    }
    if (file.size > AVATAR_MAX_BYTES) {
      setError(
        describeRefusal({ code: "AVATAR_TOO_LARGE", max: AVATAR_MAX_BYTES }),
      );
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const response = await fetch(await generateUploadUrl(), {
        method: "POST",
        headers: { "Content-Type": file.type },
        body: file,
      });
      if (!response.ok) throw new Error(`Upload failed: ${response.status}`);
      const { storageId } = (await response.json()) as {
        storageId: Id<"_storage">;
      };
      await setAvatar({ storageId });
    } catch (caught) {
      setError(avatarErrorText(caught));
    } finally {
      setBusy(false);
      if (inputRef.current) inputRef.current.value = "";
    }
  }

  return (
    <p className="avatar-upload">
      <label htmlFor={inputId}>
        {hasPicture ? "Change profile picture" : "Profile picture"}
      </label>{" "}
      <input
        id={inputId}
        ref={inputRef}
        type="file"
        accept={AVATAR_TYPES.join(",")}
        disabled={busy}
        aria-invalid={error ? true : undefined}
        aria-describedby={error ? errorId : undefined}
        onChange={(event) => {
          const file = event.target.files?.[0];
          if (file) void upload(file);
        }}
      />
      {busy && <span className="avatar-upload__busy"> Uploading…</span>}
      {error && (
        <span id={errorId} role="alert" className="field-error">
          {error}
        </span>
      )}
    </p>
  );
}
