/**
 * The visitor's display name, edited in place. Enter or leaving the field
 * saves, Escape reverts, an unchanged name is not sent. A refused name stays
 * in the field with the reason beside it while the rest of the page (rolled
 * back by the optimistic update) shows the old name.
 */
import { useId, useRef, useState } from "react";
import type { FunctionReturnType } from "convex/server";
import type { api } from "../../convex/_generated/api";
import { useSetName } from "../hooks/useSetName";
import { checkName, describeRefusal, renameErrorText } from "../lib/errors";

type Me = FunctionReturnType<typeof api.users.me>;

export function NameField({ me }: { me: Me | undefined }) {
  const setName = useSetName();
  const inputId = useId();
  const errorId = useId();
  /** What the visitor typed; null while the field just shows the saved name. */
  const [draft, setDraft] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  /** The last name the server refused, so leaving the field doesn't resend it. */
  const refused = useRef<{ name: string; error: string } | null>(null);

  async function save() {
    if (draft === null || !me) return;
    const name = draft.trim();
    if (name === me.name) {
      setDraft(null);
      setError(null);
      return;
    }
    if (name === refused.current?.name) {
      setError(refused.current.error);
      return;
    }
    const refusal = checkName(name);
    if (refusal) {
      setError(describeRefusal(refusal));
      return;
    }
    try {
      await setName({ name });
      refused.current = null;
      setDraft((current) => (current === draft ? null : current));
      setError(null);
    } catch (caught) {
      const words = renameErrorText(caught);
      refused.current = { name, error: words };
      setError(words);
    }
  }

  function revert() {
    refused.current = null;
    setDraft(null);
    setError(null);
  }

  return (
    <div className="name-field">
      <label htmlFor={inputId}>Your name</label>
      <input
        id={inputId}
        type="text"
        value={draft ?? me?.name ?? ""}
        placeholder={me ? undefined : "Loading…"}
        disabled={!me}
        autoComplete="nickname"
        spellCheck={false}
        enterKeyHint="done"
        aria-invalid={error ? true : undefined}
        aria-describedby={error ? errorId : undefined}
        onChange={(event) => {
          setDraft(event.target.value);
          if (error) setError(null);
        }}
        onKeyDown={(event) => {
          if (event.key === "Enter" && !event.nativeEvent.isComposing) {
            event.preventDefault();
            void save();
          } else if (event.key === "Escape") {
            event.preventDefault();
            revert();
          }
        }}
        onBlur={() => void save()}
      />
      {error && (
        <p id={errorId} role="alert" className="field-error">
          {error}
        </p>
      )}
    </div>
  );
}
