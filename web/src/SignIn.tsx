import { type FormEvent, useId, useState } from "react";
import { checkAdminToken, saveToken } from "./api.js";

export function SignIn(props: { reason: string | undefined; onSignedIn: () => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const inputId = useId();
  const hintId = useId();

  async function submit(e: FormEvent) {
    e.preventDefault();
    const trimmed = token.trim();
    if (trimmed === "") {
      setError("Paste an admin token.");
      return;
    }
    setBusy(true);
    setError(undefined);
    const problem = await checkAdminToken(trimmed);
    setBusy(false);
    if (problem !== undefined) {
      setError(problem);
      return;
    }
    saveToken(trimmed);
    setToken("");
    props.onSignedIn();
  }

  return (
    <main className="signin" id="main">
      <form className="card signin-card" onSubmit={(e) => void submit(e)} aria-busy={busy}>
        <h1>apikeys admin</h1>
        {props.reason !== undefined && (
          <p className="warning" role="alert">
            {props.reason}
          </p>
        )}
        <label htmlFor={inputId}>Admin token</label>
        <input
          id={inputId}
          type="password"
          className="mono"
          autoComplete="off"
          spellCheck={false}
          autoFocus
          value={token}
          aria-describedby={hintId}
          aria-invalid={error !== undefined}
          onChange={(e) => setToken(e.target.value)}
        />
        <p id={hintId} className="muted">
          A token whose policy grants the <code>apikeys:*</code> admin permissions, e.g. the bootstrap token printed
          on first start. It stays in this browser tab only and is forgotten when you sign out or close the tab.
        </p>
        {error !== undefined && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
