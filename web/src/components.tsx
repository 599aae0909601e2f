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
      // Handled on the key itself: Chrome does not let a page cancel a dialog's Escape
      // without fresh user activation, so onCancel alone cannot keep a dialog open.
      onKeyDown={(e) => {
        if (e.key !== "Escape") return;
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

/** Copies `text`; resolves false where the Clipboard API is unavailable (not a secure context). */
export async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

/** A variable name for a key's token, e.g. "invoice-worker" → INVOICE_WORKER_API_KEY. */
export function envVarName(keyName: string): string {
  const base = keyName.toUpperCase().replace(/[^A-Z0-9]+/g, "_").replace(/^_+|_+$/g, "");
  return `${/^[A-Z]/.test(base) ? base : `KEY_${base}`}_API_KEY`.replace(/^_/, "");
}

/**
 * Shows a freshly issued token, the only time it is ever visible, in a wrapping
 * monospace block with Copy and Copy as env var. It cannot be closed (Escape, ×
 * or the button) before a copy without confirming. The token lives in this
 * component's props only and is dropped on close.
 */
export function TokenDialog(props: { title: string; token: string; keyName: string; onClose: () => void }) {
  const { token, keyName } = props;
  const [copied, setCopied] = useState<"token" | "env" | "select" | undefined>();
  const [confirming, setConfirming] = useState(false);
  const blockRef = useRef<HTMLElement>(null);
  const labelId = useId();
  const variable = envVarName(keyName);

  async function copy(what: "token" | "env") {
    if (await copyText(what === "token" ? token : `${variable}=${token}`)) {
      setCopied(what);
      setConfirming(false);
      return;
    }
    // Without the Clipboard API (plain http off localhost), select the token for Ctrl+C.
    const range = document.createRange();
    if (blockRef.current) range.selectNodeContents(blockRef.current);
    window.getSelection()?.removeAllRanges();
    window.getSelection()?.addRange(range);
    setCopied("select");
  }
  const close = () => (copied === "token" || copied === "env" ? props.onClose() : setConfirming(true));

  return (
    <Dialog title={props.title} onClose={close}>
      <div className="token-reveal">
        <p className="warning">
          <strong>Copy this token now.</strong> It is shown only once; the server keeps only a hash and cannot show it
          again. If you lose it, rotate the key.
        </p>
        <p id={labelId} className="label">
          Token for {keyName}
        </p>
        <code ref={blockRef} className="token-block" data-testid="new-token" aria-labelledby={labelId} tabIndex={0}>
          {token}
        </code>
        <div className="token-actions">
          <button type="button" className="primary" data-autofocus onClick={() => void copy("token")}>
            Copy
          </button>
          <button type="button" className="secondary" onClick={() => void copy("env")}>
            Copy as env var
          </button>
        </div>
        <p className="muted" role="status" aria-live="polite">
          {copied === "token" && "Copied to the clipboard."}
          {copied === "env" && (
            <>
              Copied as <code>{variable}=…</code>
            </>
          )}
          {copied === "select" && "Selected: press Ctrl+C (⌘C) to copy."}
        </p>
      </div>
      {confirming ? (
        <div className="dialog-actions confirm-close" role="alert">
          <span>Close without copying? The token cannot be shown again.</span>
          <button type="button" className="secondary" onClick={() => setConfirming(false)}>
            Keep open
          </button>
          <button type="button" className="danger" onClick={props.onClose}>
            Close without copying
          </button>
        </div>
      ) : (
        <div className="dialog-actions">
          <button type="button" className="primary" onClick={close}>
            I have copied the token
          </button>
        </div>
      )}
    </Dialog>
  );
}

/** A message pinned to the bottom of the viewport, with an optional action (e.g. Undo); it fades after a while. */
export function Toast(props: { message: string; action?: { label: string; run: () => void }; onDismiss: () => void }) {
  const { onDismiss } = props;
  useEffect(() => {
    const timer = window.setTimeout(onDismiss, 8000);
    return () => window.clearTimeout(timer);
  }, [props.message, onDismiss]);
  return (
    <div className="toast" role="status" aria-live="polite">
      <span>{props.message}</span>
      {props.action && (
        <button type="button" className="secondary" onClick={props.action.run}>
          {props.action.label}
        </button>
      )}
      <button type="button" className="link-button" onClick={onDismiss}>
        Dismiss
      </button>
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
