import { type ReactNode, useEffect, useId, useRef, useState } from "react";
import { describeError } from "./api.js";

/** A modal dialog: traps focus, closes on Escape, returns focus to where it was opened from. */
export function Dialog(props: { title: string; onClose: () => void; children: ReactNode; wide?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const { onClose } = props;
  useEffect(() => {
    const dialog = ref.current;
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : undefined;
    dialog?.showModal();
    // React's autoFocus fires before showModal() and is lost; showModal() alone would focus the Close button.
    dialog?.querySelector<HTMLElement>("[data-autofocus]")?.focus();
    return () => {
      dialog?.close();
      opener?.focus();
    };
  }, []);
  return (
    <dialog
      ref={ref}
      className={props.wide ? "dialog wide" : "dialog"}
      aria-labelledby={titleId}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      <header className="dialog-header">
        <h2 id={titleId}>{props.title}</h2>
        <button type="button" className="icon-button" aria-label="Close" onClick={onClose}>
          ×
        </button>
      </header>
      {props.children}
    </dialog>
  );
}

/** A failed call, with the server's own message. */
export function ErrorMessage({ error }: { error: unknown }) {
  if (error === null || error === undefined) return null;
  return (
    <p className="error" role="alert">
      {describeError(error)}
    </p>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status" aria-live="polite">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

/**
 * Shows a freshly issued token, the only time it is ever visible, with a copy
 * button. The token lives in this component's props only and is dropped on close.
 */
export function TokenReveal({ token, keyName }: { token: string; keyName: string }) {
  const [copied, setCopied] = useState<"yes" | "select" | undefined>();
  const inputRef = useRef<HTMLInputElement>(null);
  const id = useId();
  async function copy() {
    try {
      await navigator.clipboard.writeText(token);
      setCopied("yes");
    } catch {
      // The Clipboard API needs a secure context (https or localhost); leave the user a selection to copy by hand.
      inputRef.current?.select();
      setCopied("select");
    }
  }
  return (
    <div className="token-reveal">
      <p className="warning" role="alert">
        <strong>Copy this token now.</strong> It is shown only once; the server keeps only a hash and cannot show it
        again. If you lose it, rotate the key.
      </p>
      <label htmlFor={id}>Token for {keyName}</label>
      <div className="token-row">
        <input
          id={id}
          ref={inputRef}
          className="mono"
          readOnly
          value={token}
          data-testid="new-token"
          data-autofocus
          onFocus={(e) => e.currentTarget.select()}
        />
        <button type="button" className="primary" onClick={() => void copy()}>
          Copy
        </button>
      </div>
      <p className="muted" role="status" aria-live="polite">
        {copied === "yes" && "Copied to the clipboard."}
        {copied === "select" && "Selected: press Ctrl+C (⌘C) to copy."}
      </p>
    </div>
  );
}

/** Status line for completed actions, read out by screen readers. */
export function Notice({ message, onDismiss }: { message: string | undefined; onDismiss: () => void }) {
  if (message === undefined) return <div role="status" aria-live="polite" className="sr-only" />;
  return (
    <div role="status" aria-live="polite" className="notice">
      <span>{message}</span>
      <button type="button" className="link-button" onClick={onDismiss}>
        Dismiss
      </button>
    </div>
  );
}
