/**
 * The visitor's account, in the header. A guest sees "Sign up to keep your
 * name" and "Sign in", which open one dialog (a real `<dialog>`: focus moves
 * in, Escape closes it, focus returns). A member sees a badge with their
 * picture and name, the picture upload, and the two ways to sign out.
 */
import { useId, useRef, useState, type RefObject } from "react";
import type { FunctionReturnType } from "convex/server";
import type { api } from "../../convex/_generated/api";
import { PASSWORD_MIN_CHARS } from "../../convex/limits";
import { useAccount, type Credentials } from "../hooks/useAccount";
import { signInErrorText, signOutErrorText } from "../lib/errors";
import { rememberedEmail } from "../lib/rememberedEmail";
import { Avatar } from "./Avatar";
import { AvatarUpload } from "./AvatarUpload";

type Me = NonNullable<FunctionReturnType<typeof api.users.me>>;
type Flow = Credentials["flow"];

export function Account({ me }: { me: Me | null | undefined }) {
  const account = useAccount();
  const dialogRef = useRef<HTMLDialogElement>(null);
  const [flow, setFlow] = useState<Flow>("signUp");
  const [opened, setOpened] = useState(0);
  // While a sign-in swaps secrets and tokens, `me` is briefly null; the
  // dialog (and the flow it runs) must stay mounted through that.
  const [lastMe, setLastMe] = useState(me);
  if (me && me !== lastMe) setLastMe(me);
  const shown = me ?? lastMe;

  const open = (next: Flow) => {
    setFlow(next);
    setOpened((count) => count + 1);
    dialogRef.current?.showModal();
  };
  return (
    <div className="account">
      {shown && !shown.isAnonymous && (
        <MemberBadge me={shown} account={account} />
      )}
      {shown?.isAnonymous && (
        <>
          <button
            type="button"
            className="primary"
            onClick={() => open("signUp")}
          >
            Sign up to keep your name
          </button>
          <button type="button" onClick={() => open("signIn")}>
            Sign in
          </button>
        </>
      )}
      <SignInDialog
        dialogRef={dialogRef}
        account={account}
        flow={flow}
        onFlowChange={setFlow}
        opened={opened}
        name={shown?.name ?? ""}
      />
    </div>
  );
}

type AccountActions = ReturnType<typeof useAccount>;

function MemberBadge({ me, account }: { me: Me; account: AccountActions }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const badgeId = useId();

  async function signOut(forget: boolean) {
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      await account.signOut({ forget });
    } catch (caught) {
      setError(signOutErrorText(caught));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="account__member" aria-labelledby={badgeId}>
      <p id={badgeId} className="account__badge">
        <Avatar user={me} size={32} />
        <span>
          <span className="visually-hidden">Signed in as </span>
          {me.name}
        </span>
        <span className="account__kind" aria-hidden="true">
          Member
        </span>
      </p>
      <AvatarUpload hasPicture={me.avatarUrl !== null} />
      <button
        type="button"
        aria-disabled={busy || undefined}
        onClick={() => void signOut(false)}
      >
        Sign out
      </button>
      <button
        type="button"
        aria-disabled={busy || undefined}
        onClick={() => void signOut(true)}
      >
        Sign out and forget this device
      </button>
      {error && (
        <p role="alert" className="field-error">
          {error}
        </p>
      )}
    </section>
  );
}

function SignInDialog({
  dialogRef,
  account,
  flow,
  onFlowChange,
  opened,
  name,
}: {
  dialogRef: RefObject<HTMLDialogElement | null>;
  account: AccountActions;
  flow: Flow;
  onFlowChange: (flow: Flow) => void;
  /** Counts the dialog's openings: each starts from the remembered e-mail. */
  opened: number;
  name: string;
}) {
  const titleId = useId();
  const emailId = useId();
  const passwordId = useId();
  const hintId = useId();
  const errorId = useId();
  const [email, setEmail] = useState(rememberedEmail);
  const [openedFor, setOpenedFor] = useState(opened);
  if (openedFor !== opened) {
    setOpenedFor(opened);
    setEmail(rememberedEmail());
  }
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const signingUp = flow === "signUp";
  const title = signingUp ? "Sign up to keep your name" : "Sign in";

  async function submit() {
    if (busy) return;
    if (email.trim() === "" || password === "") {
      setError("Type your e-mail and a password first.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await account.signIn({ email: email.trim(), password, flow });
      setPassword("");
      dialogRef.current?.close();
    } catch (caught) {
      setError(signInErrorText(caught, flow));
    } finally {
      setBusy(false);
    }
  }

  const describedBy =
    [signingUp && hintId, error && errorId].filter(Boolean).join(" ") ||
    undefined;
  return (
    <dialog
      ref={dialogRef}
      className="confirm account-dialog"
      aria-labelledby={titleId}
      onClose={() => {
        setError(null);
        setPassword("");
      }}
    >
      <h2 id={titleId}>{title}</h2>
      <p>
        {signingUp
          ? `Your account keeps the name "${name}" and every message you wrote here.`
          : "Messages you wrote here as a guest join your account."}
      </p>
      <form
        method="dialog"
        noValidate
        onSubmit={(event) => {
          event.preventDefault();
          void submit();
        }}
      >
        <p className="account-dialog__field">
          <label htmlFor={emailId}>E-mail</label>
          <input
            id={emailId}
            type="email"
            autoComplete="email"
            autoFocus
            value={email}
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? errorId : undefined}
            onChange={(event) => setEmail(event.target.value)}
          />
        </p>
        <p className="account-dialog__field">
          <label htmlFor={passwordId}>Password</label>
          <input
            id={passwordId}
            type="password"
            autoComplete={signingUp ? "new-password" : "current-password"}
            value={password}
            aria-invalid={error ? true : undefined}
            aria-describedby={describedBy}
            onChange={(event) => setPassword(event.target.value)}
          />
        </p>
        {signingUp && (
          <p id={hintId} className="account-dialog__hint">
            At least {PASSWORD_MIN_CHARS} characters.
          </p>
        )}
        {error && (
          <p id={errorId} role="alert" className="field-error">
            {error}
          </p>
        )}
        <div className="confirm__buttons">
          <button type="button" onClick={() => dialogRef.current?.close()}>
            Cancel
          </button>
          <button
            type="submit"
            className="primary"
            aria-disabled={busy || undefined}
          >
            {busy
              ? signingUp
                ? "Signing up…"
                : "Signing in…"
              : signingUp
                ? "Sign up"
                : "Sign in"}
          </button>
        </div>
      </form>
      <p className="account-dialog__switch">
        {signingUp ? "Already have an account? " : "New here? "}
        <button
          type="button"
          className="link"
          onClick={() => {
            setError(null);
            onFlowChange(signingUp ? "signIn" : "signUp");
          }}
        >
          {signingUp ? "Sign in instead" : "Sign up instead"}
        </button>
      </p>
    </dialog>
  );
}
