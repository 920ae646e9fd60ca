/**
 * "Use on another device": this device can show a one-time code, or take a
 * code shown by another device and continue as that person. Taking a code
 * gives this browser a new secret (made here, as `SessionProvider` makes
 * every secret) that the server attaches to the code's user; the old secret
 * stops working.
 */
import { useId, useState } from "react";
import {
  useSessionId,
  useSessionMutation,
} from "convex-helpers/react/sessions";
import { api } from "../../convex/_generated/api";
import { pairingErrorText, WRONG_PAIRING_CODE } from "../lib/errors";

const EXPIRY_TIME = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });

/** Thrown inside the session refresh so the secret is not replaced. */
class WrongCode extends Error {}

export function PairDevice() {
  const [, refreshSessionId] = useSessionId();
  const create = useSessionMutation(api.pairing.create);
  const claim = useSessionMutation(api.pairing.claim);
  const headingId = useId();
  const codeId = useId();
  const inputId = useId();
  const errorId = useId();
  const [shown, setShown] = useState<{
    code: string;
    expiresAt: number;
  } | null>(null);
  const [showError, setShowError] = useState<string | null>(null);
  const [entered, setEntered] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function showCode() {
    setShowError(null);
    try {
      setShown(await create());
    } catch (caught) {
      setShowError(pairingErrorText(caught));
    }
  }

  async function takeCode() {
    if (busy) return;
    const code = entered.trim();
    if (code === "") {
      setError("Type the code from your other device first.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await refreshSessionId(async (newSessionId) => {
        const result = await claim({ code, newSessionId });
        if (!result.ok) throw new WrongCode();
      });
      setEntered("");
    } catch (caught) {
      setError(
        caught instanceof WrongCode
          ? WRONG_PAIRING_CODE
          : pairingErrorText(caught),
      );
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="panel" aria-labelledby={headingId}>
      <h2 id={headingId} className="panel__title">
        Use on another device
      </h2>
      <div className="panel__part">
        <button type="button" onClick={() => void showCode()}>
          {shown ? "Show a new code" : "Show a pairing code"}
        </button>
        {shown && (
          <p className="pairing-code">
            <label htmlFor={codeId}>Your pairing code</label>{" "}
            <input
              id={codeId}
              type="text"
              readOnly
              value={shown.code}
              size={10}
              onFocus={(event) => event.target.select()}
            />{" "}
            <span>
              Enter it on your other device before{" "}
              {EXPIRY_TIME.format(new Date(shown.expiresAt))}. It works once.
            </span>
          </p>
        )}
        {showError && (
          <p role="alert" className="field-error">
            {showError}
          </p>
        )}
      </div>
      <form
        className="panel__part"
        noValidate
        onSubmit={(event) => {
          event.preventDefault();
          void takeCode();
        }}
      >
        <label htmlFor={inputId}>Pairing code</label>{" "}
        <input
          id={inputId}
          type="text"
          value={entered}
          size={10}
          autoComplete="one-time-code"
          autoCapitalize="characters"
          spellCheck={false}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? errorId : undefined}
          onChange={(event) => {
            setEntered(event.target.value);
            if (error) setError(null);
          }}
        />{" "}
        <button type="submit" aria-disabled={busy || undefined}>
          Continue here as that person
        </button>
        {error && (
          <p id={errorId} role="alert" className="field-error">
            {error}
          </p>
        )}
      </form>
    </section>
  );
}
