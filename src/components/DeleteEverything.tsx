/**
 * "Delete everything I did here": after a confirmation, deletes the
 * visitor's messages, their sessions on every device and their user, one
 * bounded server step at a time, then starts this browser over as a new
 * guest with a new secret.
 */
import { useId, useRef, useState } from "react";
import {
  useSessionId,
  useSessionMutation,
} from "convex-helpers/react/sessions";
import { api } from "../../convex/_generated/api";
import { deleteErrorText } from "../lib/errors";

/**
 * Each step deletes up to 200 messages; this bounds the loop at 2 million
 * messages, far beyond what one person writes, so a server that never says
 * "done" cannot spin the page forever.
 */
const MAX_STEPS = 10_000;

export function DeleteEverything() {
  const [, refreshSessionId] = useSessionId();
  const remove = useSessionMutation(api.users.remove);
  const dialogRef = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const textId = useId();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function deleteEverything() {
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      await refreshSessionId(async () => {
        for (let step = 0; step < MAX_STEPS; step++) {
          if ((await remove()).done) return;
        }
        throw new Error("Deleting did not finish.");
      });
      dialogRef.current?.close();
    } catch (caught) {
      setError(deleteErrorText(caught));
    } finally {
      setBusy(false);
    }
  }

  return (
    <>
      <button
        type="button"
        className="danger"
        onClick={() => {
          setError(null);
          dialogRef.current?.showModal();
        }}
      >
        Delete everything I did here
      </button>
      <dialog
        ref={dialogRef}
        className="confirm"
        aria-labelledby={titleId}
        aria-describedby={textId}
      >
        <h2 id={titleId}>Delete everything?</h2>
        <p id={textId}>
          This deletes all your messages, your name and this identity on every
          device you paired. It cannot be undone. You will continue as a new
          guest.
        </p>
        {error && (
          <p role="alert" className="field-error">
            {error}
          </p>
        )}
        <div className="confirm__buttons">
          <button
            type="button"
            autoFocus
            onClick={() => dialogRef.current?.close()}
          >
            Cancel
          </button>
          <button
            type="button"
            className="danger"
            aria-disabled={busy || undefined}
            onClick={() => void deleteEverything()}
          >
            {busy ? "Deleting…" : "Delete everything"}
          </button>
        </div>
      </dialog>
    </>
  );
}
