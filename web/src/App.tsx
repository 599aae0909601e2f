import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { clearToken, readToken } from "./api.js";
import { AuditPage } from "./AuditPage.js";
import { ConsumersPage } from "./ConsumersPage.js";
import { KeysPage } from "./KeysPage.js";
import { PermissionsPage } from "./PermissionsPage.js";
import { PoliciesPage } from "./PoliciesPage.js";
import { navigate, PAGES, usePage } from "./router.js";
import { SignIn } from "./SignIn.js";
import { retryNow, useOffline, useSelf } from "./session.js";

const SESSION_ENDED = "apikeys:session-ended";

/** Tells the app that the server no longer accepts the session's token. */
export function signalSessionEnded(): void {
  window.dispatchEvent(new Event(SESSION_ENDED));
}

export function App() {
  const [signedIn, setSignedIn] = useState(() => readToken() !== undefined);
  const [reason, setReason] = useState<string>();
  const queryClient = useQueryClient();
  const page = usePage();

  useEffect(() => {
    const onEnded = () => {
      clearToken();
      queryClient.clear();
      setReason("The server no longer accepts your token (deleted, disabled or rotated). Sign in again.");
      setSignedIn(false);
    };
    window.addEventListener(SESSION_ENDED, onEnded);
    return () => window.removeEventListener(SESSION_ENDED, onEnded);
  }, [queryClient]);

  const title = PAGES.find((p) => p.path === page)?.title ?? "";
  useEffect(() => {
    document.title = signedIn ? `${title} · apikeys admin` : "Sign in · apikeys admin";
  }, [signedIn, title]);

  if (!signedIn) {
    return (
      <SignIn
        reason={reason}
        onSignedIn={() => {
          setReason(undefined);
          setSignedIn(true);
        }}
      />
    );
  }

  function signOut() {
    clearToken();
    queryClient.clear();
    setReason(undefined);
    setSignedIn(false);
  }

  return (
    <div className="shell">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">apikeys admin</span>
        <nav aria-label="Sections">
          <ul>
            {PAGES.map((p) => (
              <li key={p.path}>
                <a href={p.path} aria-current={p.path === page ? "page" : undefined} onClick={(e) => navigate(e, p.path)}>
                  {p.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <button type="button" className="secondary sign-out" onClick={signOut}>
          Sign out
        </button>
      </header>
      <Banners />
      <main id="main" tabIndex={-1}>
        {page === "/keys" && <KeysPage />}
        {page === "/policies" && <PoliciesPage />}
        {page === "/consumers" && <ConsumersPage />}
        {page === "/permissions" && <PermissionsPage />}
        {page === "/audit" && <AuditPage />}
      </main>
    </div>
  );
}

/** Offline (with Retry) and "signed in with the bootstrap key" banners, above every page. */
function Banners() {
  const offline = useOffline();
  const self = useSelf();
  const queryClient = useQueryClient();
  const [retrying, setRetrying] = useState(false);
  return (
    <>
      {offline && (
        <div className="banner offline" role="alert">
          <span>
            <strong>The server cannot be reached.</strong> What you see may be out of date; changes are disabled until it
            answers again.
          </span>
          <button
            type="button"
            className="secondary"
            disabled={retrying}
            onClick={() => {
              setRetrying(true);
              void retryNow(queryClient).finally(() => setRetrying(false));
            }}
          >
            {retrying ? "Retrying…" : "Retry"}
          </button>
        </div>
      )}
      {self.isBootstrap && (
        <div className="banner bootstrap" role="note">
          You are signed in with the <strong>bootstrap key</strong>, which can do everything. Create an admin key for
          yourself, sign in with it, then disable or delete the bootstrap key.
        </div>
      )}
    </>
  );
}
