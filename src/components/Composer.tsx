/**
 * Writes and sends a message: Enter sends, Shift+Enter starts a new line. The
 * message shows in the list at once (optimistic update), but the draft is
 * cleared only once the server has accepted it, so a refused message stays in
 * the box with the reason beside it.
 */
import { useId, useLayoutEffect, useRef, useState } from "react";
import type { Id } from "../../convex/_generated/dataModel";
import { MESSAGE_MAX_CHARS } from "../../convex/limits";
import { countCharacters } from "../../convex/model/text";
import { useSendMessage } from "../hooks/useSendMessage";
import {
  checkMessage,
  describeRefusal,
  formatCount,
  sendErrorText,
} from "../lib/errors";

/** The character counter appears this close to the limit. */
const COUNTER_MARGIN = 200;

export function Composer({ onSent }: { onSent: (id: Id<"messages">) => void }) {
  const send = useSendMessage();
  const inputId = useId();
  const errorId = useId();
  const counterId = useId();
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);

  const length = countCharacters(draft.trim());
  const showCounter = length >= MESSAGE_MAX_CHARS - COUNTER_MARGIN;
  const describedBy =
    [error && errorId, showCounter && counterId].filter(Boolean).join(" ") ||
    undefined;

  // Grow with the text up to the CSS max-height (`field-sizing` is not
  // everywhere yet).
  useLayoutEffect(() => {
    const input = inputRef.current;
    if (!input) return;
    input.style.height = "auto";
    const borders = input.offsetHeight - input.clientHeight;
    input.style.height = `${input.scrollHeight + borders}px`;
  }, [draft]);

  async function submit() {
    if (sending) return;
    const submitted = draft;
    const body = submitted.trim();
    const refusal = checkMessage(body);
    if (refusal) {
      setError(describeRefusal(refusal, body));
      return;
    }
    setSending(true);
    setError(null);
    try {
      const id = await send({ body });
      // Keep anything typed while the message was on its way.
      setDraft((current) => (current === submitted ? "" : current));
      onSent(id);
    } catch (caught) {
      setError(sendErrorText(caught, body));
    } finally {
      setSending(false);
    }
  }

  return (
    <form
      className="composer"
      noValidate
      onSubmit={(event) => {
        event.preventDefault();
        inputRef.current?.focus();
        void submit();
      }}
    >
      {error && (
        <p id={errorId} role="alert" className="field-error">
          {error}
        </p>
      )}
      <div className="composer__row">
        <label htmlFor={inputId} className="visually-hidden">
          Message
        </label>
        <textarea
          id={inputId}
          ref={inputRef}
          rows={1}
          value={draft}
          placeholder="Write a message…"
          enterKeyHint="send"
          aria-invalid={error ? true : undefined}
          aria-describedby={describedBy}
          onChange={(event) => {
            setDraft(event.target.value);
            if (error) setError(null);
          }}
          onKeyDown={(event) => {
            if (
              event.key === "Enter" &&
              !event.shiftKey &&
              !event.nativeEvent.isComposing
            ) {
              event.preventDefault();
              void submit();
            }
          }}
        />
        <button
          type="submit"
          className="composer__send"
          aria-disabled={sending || undefined}
        >
          Send
        </button>
      </div>
      {showCounter && (
        <p
          id={counterId}
          className={
            length > MESSAGE_MAX_CHARS ? "counter counter--over" : "counter"
          }
        >
          {formatCount(length)} / {formatCount(MESSAGE_MAX_CHARS)}
          <span className="visually-hidden"> characters</span>
        </p>
      )}
    </form>
  );
}
