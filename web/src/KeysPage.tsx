import { useMutation, useQuery } from "@connectrpc/connect-query";
import { keepPreviousData } from "@tanstack/react-query";
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type FormEvent, useEffect, useId, useState } from "react";
import { ApiKeysAdminService, AuditCallKind, AuditEventView } from "../../src/gen/apikeys/v1/admin_pb.js";
import { AuditStage } from "../../src/gen/apikeys/v1/audit_pb.js";
import { type ApiKey, CredentialType } from "../../src/gen/apikeys/v1/resources_pb.js";
import { ANY_ORIGIN, CidrField, cidrText, invalidCidrs, parseCidrs } from "./CidrField.js";
import { copyText, Dialog, Empty, ErrorMessage, Loading, Toast, TokenDialog } from "./components.js";
import { formatTime, fromLocalInput, isoTime, plural, relativeTime, toLocalInput } from "./format.js";
import { useAllConsumers } from "./queries.js";
import { creditsText, UsageChart } from "./UsageChart.js";
import { useInvalidate, useOffline, useSelf } from "./session.js";

const admin = ApiKeysAdminService.method;

type Modal =
  | { kind: "details"; key: ApiKey }
  | { kind: "disable-self"; key: ApiKey }
  | { kind: "create" }
  | { kind: "edit"; key: ApiKey }
  | { kind: "rotate"; key: ApiKey }
  | { kind: "delete"; key: ApiKey }
  | { kind: "token"; token: string; keyName: string; title: string };

const PAGE_SIZE = 50;
const DAY_MS = 86_400_000;
/** As the server's status:expiring_soon. */
const EXPIRING_SOON_MS = 7 * DAY_MS;

const STATUSES = [
  { value: "", label: "All" },
  { value: "enabled", label: "Enabled" },
  { value: "disabled", label: "Disabled" },
  { value: "expired", label: "Expired" },
  { value: "expiring_soon", label: "Expiring soon" },
  { value: "never_used", label: "Never used" },
] as const;

const SORTABLE = [
  { column: "name", label: "Name" },
  { column: "created_on", label: "Created" },
  { column: "last_used_on", label: "Last used" },
  { column: "expires_on", label: "Expires" },
] as const;
type SortColumn = (typeof SORTABLE)[number]["column"];

/** The list's state, kept in the address bar so a view can be bookmarked, shared and reloaded. */
interface ListState {
  q: string;
  status: string;
  sort: SortColumn;
  desc: boolean;
}

function readListState(): ListState {
  const params = new URLSearchParams(window.location.search);
  const sort = SORTABLE.find((s) => s.column === params.get("sort"))?.column ?? "created_on";
  const status = STATUSES.find((s) => s.value === params.get("status"))?.value ?? "";
  return { q: params.get("q") ?? "", status, sort, desc: params.get("dir") === "desc" };
}

function writeListState(state: ListState): void {
  const params = new URLSearchParams();
  if (state.q !== "") params.set("q", state.q);
  if (state.status !== "") params.set("status", state.status);
  if (state.sort !== "created_on") params.set("sort", state.sort);
  if (state.desc) params.set("dir", "desc");
  const search = params.toString();
  window.history.replaceState(null, "", `${window.location.pathname}${search === "" ? "" : `?${search}`}`);
}

/** The server filter for a list state: the search box's words (quoted when needed) and the status chip. */
function serverFilter(state: ListState): string {
  const words = state.q
    .trim()
    .split(/\s+/)
    .filter((w) => w !== "")
    .map((w) => (/[":]/.test(w) ? `"${w.replace(/"/g, "")}"` : w));
  return [...words, ...(state.status === "" ? [] : [`status:${state.status}`])].join(" ");
}

export function KeysPage() {
  const [state, setState] = useState(readListState);
  const [searchInput, setSearchInput] = useState(state.q);
  // Tokens of the pages before the current one, so Previous goes back without refetching from the start.
  const [pageTokens, setPageTokens] = useState<string[]>([""]);
  const pageToken = pageTokens[pageTokens.length - 1]!;
  const request = { pageSize: PAGE_SIZE, pageToken, filter: serverFilter(state), orderBy: `${state.sort}${state.desc ? " desc" : ""}` };
  const keys = useQuery(admin.adminGetApiKeys, request, { placeholderData: keepPreviousData });
  const [modal, setModal] = useState<Modal>();
  const [toast, setToast] = useState<{ message: string; undo?: () => void }>();
  const [busyKey, setBusyKey] = useState<string>();
  const self = useSelf();
  const offline = useOffline();
  const invalidate = useInvalidate();
  const toggle = useMutation(admin.adminUpdateApiKey);
  const searchId = useId();
  const readOnly = self.lacks("apikeys:keys.write");
  const writeBlocked = offline ? "The server cannot be reached" : readOnly;

  function update(next: Partial<ListState>) {
    const merged = { ...state, ...next };
    setState(merged);
    setPageTokens([""]);
    writeListState(merged);
  }

  // The search goes to the server a moment after typing stops.
  useEffect(() => {
    if (searchInput === state.q) return;
    const timer = window.setTimeout(() => update({ q: searchInput }), 300);
    return () => window.clearTimeout(timer);
  });

  async function setEnabled(k: ApiKey, enabled: boolean, undoable: boolean) {
    setBusyKey(k.id);
    try {
      const res = await toggle.mutateAsync({ id: k.id, enabled, updateMask: { paths: ["enabled"] } });
      await invalidate("AdminGetApiKeys", "AdminGetApiKey", "api-keys");
      setToast({
        message: `${res.apiKey?.name ?? k.name} ${enabled ? "enabled" : "disabled"}.`,
        undo: undoable && !enabled ? () => void setEnabled(k, true, false) : undefined,
      });
    } catch {
      // Shown by the row's error line.
    } finally {
      setBusyKey(undefined);
    }
  }

  function sortBy(column: SortColumn) {
    // A new column starts in its most useful direction: names A→Z, times newest first.
    update(state.sort === column ? { desc: !state.desc } : { sort: column, desc: column !== "name" });
  }

  const close = () => setModal(undefined);
  const page = keys.data;
  const first = (pageTokens.length - 1) * PAGE_SIZE + 1;
  const filtered = state.q.trim() !== "" || state.status !== "";

  return (
    <section aria-labelledby="keys-title">
      <div className="page-header">
        <h1 id="keys-title">API keys</h1>
        <button
          type="button"
          className="primary"
          disabled={writeBlocked !== undefined}
          title={writeBlocked}
          onClick={() => setModal({ kind: "create" })}
        >
          New API key
        </button>
      </div>
      <p className="muted">Each key belongs to one policy, which decides what it may do. Tokens are never shown again after creation.</p>
      {readOnly !== undefined && (
        <p className="notice read-only" role="note">
          Read-only: {readOnly.toLowerCase().replace(/^your key/, "your key")}, so creating, editing, rotating, disabling and
          deleting keys are disabled.
        </p>
      )}
      <ErrorMessage error={toggle.error} />

      <div className="toolbar">
        <label htmlFor={searchId}>Search</label>
        <input
          id={searchId}
          type="search"
          placeholder="Name or token start"
          value={searchInput}
          onChange={(e) => setSearchInput(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter") update({ q: searchInput });
          }}
        />
      </div>
      <div className="chips-bar" role="group" aria-label="Status">
        {STATUSES.map((s) => (
          <button
            key={s.value}
            type="button"
            className={state.status === s.value ? "chip active" : "chip"}
            aria-pressed={state.status === s.value}
            onClick={() => update({ status: s.value })}
          >
            {s.label}
          </button>
        ))}
      </div>

      {keys.isPending && <Loading what="API keys" />}
      <ErrorMessage error={keys.error} />
      {page !== undefined && (
        <p className="muted list-summary" role="status" aria-live="polite" data-testid="keys-total">
          {page.totalSize === 0
            ? ""
            : `Showing ${first.toLocaleString()}–${(first + page.apiKeys.length - 1).toLocaleString()} of ${page.totalSize.toLocaleString()} ${filtered ? "matching " : ""}${page.totalSize === 1 ? "key" : "keys"}`}
        </p>
      )}
      {page !== undefined && page.totalSize === 0 && !filtered && (
        <Empty>
          <p>No API keys yet.</p>
          <button type="button" className="primary" disabled={writeBlocked !== undefined} onClick={() => setModal({ kind: "create" })}>
            Create the first key
          </button>
        </Empty>
      )}
      {page !== undefined && page.totalSize === 0 && filtered && (
        <Empty>
          <p>No key matches {state.q.trim() !== "" && `“${state.q.trim()}”`} {state.status !== "" && `(${STATUSES.find((s) => s.value === state.status)?.label.toLowerCase()})`}.</p>
          <button type="button" className="link-button" onClick={() => { setSearchInput(""); update({ q: "", status: "" }); }}>
            Clear the filters
          </button>
        </Empty>
      )}
      {page !== undefined && page.apiKeys.length > 0 && (
        <div className="table-wrap">
          <table className="responsive" aria-busy={keys.isFetching}>
            <caption className="sr-only">API keys, page {pageTokens.length} ({page.totalSize} in all)</caption>
            <thead>
              <tr>
                <SortHeader column="name" label="Name" state={state} onSort={sortBy} />
                <th scope="col">Policy</th>
                <th scope="col">Token start</th>
                <th scope="col">Status</th>
                <SortHeader column="created_on" label="Created" state={state} onSort={sortBy} />
                <SortHeader column="last_used_on" label="Last used" state={state} onSort={sortBy} />
                <SortHeader column="expires_on" label="Expires" state={state} onSort={sortBy} />
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {page.apiKeys.map((k) => {
                const mine = k.id === self.keyId;
                const busy = busyKey === k.id;
                return (
                  <tr key={k.id} data-key-id={k.id} aria-busy={busy}>
                    <th scope="row" data-label="Name">
                      <button type="button" className="link-button key-name" onClick={() => setModal({ kind: "details", key: k })}>
                        {k.name}
                      </button>
                      {mine && <span className="badge you">you</span>}
                      {k.description !== "" && <span className="sub">{k.description}</span>}
                      {k.consumerUsername !== "" && <span className="sub">Consumer: {k.consumerUsername}</span>}
                    </th>
                    <td data-label="Policy">{k.policy?.name ?? "—"}</td>
                    <td data-label="Token start">
                      <code>{k.start}…</code>
                    </td>
                    <td data-label="Status">
                      <KeyStatus apiKey={k} />
                    </td>
                    <td data-label="Created">
                      <time dateTime={isoTime(k.createdOn)} title={formatTime(k.createdOn)}>
                        {relativeTime(k.createdOn)}
                      </time>
                    </td>
                    <td data-label="Last used">
                      <time dateTime={isoTime(k.lastUsedOn)} title={formatTime(k.lastUsedOn, "Never")}>
                        {relativeTime(k.lastUsedOn, "Never")}
                      </time>
                    </td>
                    <td data-label="Expires">
                      <time dateTime={isoTime(k.expiresOn)} title={formatTime(k.expiresOn, "Never")}>
                        {relativeTime(k.expiresOn, "Never")}
                      </time>
                    </td>
                    <td className="actions">
                      {busy && <span className="spinner" role="status" aria-label={`Saving ${k.name}`} />}
                      <button
                        type="button"
                        className="secondary"
                        aria-label={`Edit ${k.name}`}
                        disabled={writeBlocked !== undefined}
                        title={writeBlocked}
                        onClick={() => setModal({ kind: "edit", key: k })}
                      >
                        Edit
                      </button>
                      <button
                        type="button"
                        className="secondary"
                        aria-label={`${k.enabled ? "Disable" : "Enable"} ${k.name}`}
                        disabled={busy || writeBlocked !== undefined}
                        title={writeBlocked}
                        onClick={() => (mine && k.enabled ? setModal({ kind: "disable-self", key: k }) : void setEnabled(k, !k.enabled, true))}
                      >
                        {busy ? (k.enabled ? "Disabling…" : "Enabling…") : k.enabled ? "Disable" : "Enable"}
                      </button>
                      <button
                        type="button"
                        className="secondary"
                        aria-label={`Rotate ${k.name}`}
                        disabled={writeBlocked !== undefined || k.credentialType === CredentialType.SIGNING}
                        title={writeBlocked}
                        onClick={() => setModal({ kind: "rotate", key: k })}
                      >
                        Rotate
                      </button>
                      <button
                        type="button"
                        className="danger"
                        aria-label={`Delete ${k.name}`}
                        disabled={writeBlocked !== undefined}
                        title={writeBlocked}
                        onClick={() => setModal({ kind: "delete", key: k })}
                      >
                        Delete
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {page !== undefined && (pageTokens.length > 1 || page.nextPageToken !== "") && (
        <nav className="pager" aria-label="Pages of keys">
          <button type="button" className="secondary" disabled={pageTokens.length === 1} onClick={() => setPageTokens(pageTokens.slice(0, -1))}>
            Previous
          </button>
          <span className="muted">Page {pageTokens.length} of {Math.max(1, Math.ceil(page.totalSize / PAGE_SIZE))}</span>
          <button
            type="button"
            className="secondary"
            disabled={page.nextPageToken === "" || keys.isPlaceholderData}
            onClick={() => setPageTokens([...pageTokens, page.nextPageToken])}
          >
            Next
          </button>
        </nav>
      )}

      {modal?.kind === "details" && (
        <KeyDetails
          apiKey={modal.key}
          mine={modal.key.id === self.keyId}
          writeBlocked={writeBlocked}
          onClose={close}
        />
      )}
      {modal?.kind === "create" && (
        <KeyForm
          onClose={close}
          onCreated={(token, keyName) => setModal({ kind: "token", token, keyName, title: "API key created" })}
        />
      )}
      {modal?.kind === "edit" && (
        <KeyForm
          existing={modal.key}
          onClose={close}
          onSaved={(name) => {
            setToast({ message: `${name} saved.` });
            close();
          }}
        />
      )}
      {modal?.kind === "rotate" && (
        <RotateDialog
          apiKey={modal.key}
          mine={modal.key.id === self.keyId}
          onClose={close}
          onRotated={(token) => setModal({ kind: "token", token, keyName: modal.key.name, title: "Token rotated" })}
        />
      )}
      {modal?.kind === "delete" && (
        <DeleteKeyDialog
          apiKey={modal.key}
          mine={modal.key.id === self.keyId}
          onClose={close}
          onDeleted={() => {
            setToast({ message: `${modal.key.name} deleted.` });
            close();
          }}
        />
      )}
      {modal?.kind === "disable-self" && (
        <Dialog title={`Disable ${modal.key.name}, your own key?`} onClose={close}>
          <p>
            You are signed in with this key. Disabling it signs you out at once, and you will need another admin key to
            sign in again.
          </p>
          <div className="dialog-actions">
            <button type="button" className="secondary" data-autofocus onClick={close}>
              Cancel
            </button>
            <button
              type="button"
              className="danger"
              onClick={() => {
                const key = modal.key;
                close();
                void setEnabled(key, false, false);
              }}
            >
              Disable my key
            </button>
          </div>
        </Dialog>
      )}
      {modal?.kind === "token" && <TokenDialog title={modal.title} token={modal.token} keyName={modal.keyName} onClose={close} />}
      {toast !== undefined && (
        <Toast
          message={toast.message}
          action={toast.undo && { label: "Undo", run: () => { const undo = toast.undo!; setToast(undefined); undo(); } }}
          onDismiss={() => setToast(undefined)}
        />
      )}
    </section>
  );
}

function SortHeader(props: { column: SortColumn; label: string; state: ListState; onSort: (column: SortColumn) => void }) {
  const active = props.state.sort === props.column;
  return (
    <th scope="col" aria-sort={active ? (props.state.desc ? "descending" : "ascending") : "none"}>
      <button type="button" className="sort-button" onClick={() => props.onSort(props.column)}>
        {props.label}
        <span aria-hidden="true" className="sort-mark">
          {active ? (props.state.desc ? "▼" : "▲") : "↕"}
        </span>
      </button>
    </th>
  );
}

/** One key in full: everything the list leaves out, its rotation state and its audit history. */
function KeyDetails(props: { apiKey: ApiKey; mine: boolean; writeBlocked: string | undefined; onClose: () => void }) {
  const fresh = useQuery(admin.adminGetApiKey, { id: props.apiKey.id });
  const history = useQuery(admin.adminGetAuditEvents, {
    target: props.apiKey.id,
    view: AuditEventView.CALLS,
    kind: AuditCallKind.WRITE,
    pageSize: 10,
  });
  const invalidate = useInvalidate();
  const revoke = useMutation(admin.adminRevokePreviousToken, {
    onSuccess: () => invalidate("AdminGetApiKey", "AdminGetApiKeys", "AdminGetAuditEvents"),
  });
  const [copied, setCopied] = useState(false);
  const k = fresh.data?.apiKey ?? props.apiKey;
  const env = k.environment === undefined ? {} : k.environment;
  return (
    <Dialog title={`Key ${k.name}`} onClose={props.onClose} wide>
      <dl className="details">
        <dt>Id</dt>
        <dd>
          <code className="id">{k.id}</code>{" "}
          <button type="button" className="secondary small" onClick={() => void copyText(k.id).then(setCopied)}>
            {copied ? "Copied" : "Copy id"}
          </button>
        </dd>
        <dt>Status</dt>
        <dd>
          <KeyStatus apiKey={k} /> {props.mine && <span className="badge you">you</span>}
        </dd>
        <dt>Policy</dt>
        <dd>{k.policy?.name ?? "—"}</dd>
        <dt>Consumer</dt>
        <dd>{k.consumerUsername || "—"}</dd>
        <dt>Description</dt>
        <dd>{k.description || "—"}</dd>
        <dt>Token start</dt>
        <dd>
          <code>{k.start}…</code>
        </dd>
        <dt>Rotation</dt>
        <dd>
          {k.previousTokenExpiresOn === undefined ? (
            "No previous token works."
          ) : (
            <>
              Old <code>{k.previousStart || "token"}…</code> works until{" "}
              <time dateTime={isoTime(k.previousTokenExpiresOn)}>{formatTime(k.previousTokenExpiresOn)}</time> (
              {relativeTime(k.previousTokenExpiresOn)}).{" "}
              <button
                type="button"
                className="danger small"
                disabled={revoke.isPending || props.writeBlocked !== undefined}
                title={props.writeBlocked}
                onClick={() => revoke.mutate({ id: k.id })}
              >
                {revoke.isPending ? "Revoking…" : "Revoke old now"}
              </button>
            </>
          )}
          <ErrorMessage error={revoke.error} />
        </dd>
        <dt>Allowed networks</dt>
        <dd>{cidrText(k.allowedCidrs) === "" ? "Any address" : k.allowedCidrs.map((c) => <code key={c} className="id">{c}</code>)}</dd>
        <dt>Environment</dt>
        <dd>{Object.keys(env).length === 0 ? "—" : <pre className="mono">{JSON.stringify(env, null, 2)}</pre>}</dd>
        <dt>Metadata</dt>
        <dd>{Object.keys(k.metadata).length === 0 ? "—" : <pre className="mono">{JSON.stringify(k.metadata, null, 2)}</pre>}</dd>
        <dt>Created</dt>
        <dd>
          <time dateTime={isoTime(k.createdOn)}>{formatTime(k.createdOn)}</time>
          {" by "}
          {k.createdBy === "" ? "the server (bootstrap)" : (history.data?.names[k.createdBy] ?? <code className="id">{k.createdBy}</code>)}
        </dd>
        <dt>Last used</dt>
        <dd>{k.lastUsedOn === undefined ? "Never" : `${relativeTime(k.lastUsedOn)} (${formatTime(k.lastUsedOn)})`}</dd>
        <dt>Expires</dt>
        <dd>{k.expiresOn === undefined ? "Never" : `${relativeTime(k.expiresOn)} (${formatTime(k.expiresOn)})`}</dd>
        <dt>Credits</dt>
        <dd>{creditsText(k)}</dd>
      </dl>
      <h3>Usage</h3>
      <UsageChart keyId={k.id} />
      <h3>Recent changes</h3>
      {history.isPending && <Loading what="history" />}
      <ErrorMessage error={history.error} />
      {history.data?.events.length === 0 && <p className="muted">No change recorded.</p>}
      {(history.data?.events.length ?? 0) > 0 && (
        <ul className="history">
          {history.data!.events.map((ev) => (
            <li key={ev.id}>
              <time dateTime={isoTime(ev.time)} title={formatTime(ev.time)}>
                {relativeTime(ev.time)}
              </time>{" "}
              <code>{ev.rpc.slice(ev.rpc.lastIndexOf("/") + 1)}</code>{" "}
              <span className={ev.stage === AuditStage.FAILURE ? "badge off" : "badge ok"}>{ev.code || "pending"}</span>{" "}
              by {history.data!.names[ev.actorKeyId] ?? (ev.actorKeyId || "—")}
            </li>
          ))}
        </ul>
      )}
    </Dialog>
  );
}

/** The environment textarea as a JSON object, or the reason it is not one. */
function parseEnvironment(text: string): { value: JsonObject } | { error: string } {
  if (text.trim() === "") return { value: {} };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return { error: `Environment is not valid JSON: ${(err as Error).message}` };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return { error: 'Environment must be a JSON object, e.g. {"region": "eu-west-1"}.' };
  }
  return { value: parsed as JsonObject };
}

function environmentText(env: JsonObject | undefined): string {
  return env === undefined || Object.keys(env).length === 0 ? "" : JSON.stringify(env, null, 2);
}

function KeyStatus({ apiKey }: { apiKey: ApiKey }) {
  if (!apiKey.enabled) return <span className="badge off">Disabled</span>;
  const expires = apiKey.expiresOn && timestampDate(apiKey.expiresOn).getTime();
  if (expires && expires <= Date.now()) return <span className="badge off">Expired</span>;
  return (
    <>
      <span className="badge ok">Enabled</span>
      {expires && expires - Date.now() <= EXPIRING_SOON_MS && <span className="badge warn">Expiring soon</span>}
    </>
  );
}

function KeyForm(props: {
  existing?: ApiKey;
  onClose: () => void;
  onCreated?: (token: string, keyName: string) => void;
  onSaved?: (name: string) => void;
}) {
  const { existing } = props;
  // Asked for when the form opens, not with the list: the list page needs no policy.
  const policiesQuery = useQuery(admin.adminGetApiKeyPolicies, {});
  const policies = policiesQuery.data?.policies;
  const existingCidrs = existing ? cidrText(existing.allowedCidrs) : "";
  const existingExpiry = existing?.expiresOn ? toLocalInput(timestampDate(existing.expiresOn)) : "";
  const [name, setName] = useState(existing?.name ?? "");
  const [policyId, setPolicyId] = useState(existing?.policy?.id ?? "");
  const [enabled, setEnabled] = useState(existing?.enabled ?? true);
  const [description, setDescription] = useState(existing?.description ?? "");
  const [expires, setExpires] = useState(existingExpiry);
  const [cidrs, setCidrs] = useState(existingCidrs);
  const [environment, setEnvironment] = useState(environmentText(existing?.environment));
  const [consumer, setConsumer] = useState("");
  const consumers = useAllConsumers();
  // Field errors show once a submit was tried, then follow every keystroke.
  const [showErrors, setShowErrors] = useState(false);
  const invalidate = useInvalidate();
  const onSuccess = () => invalidate("AdminGetApiKeys", "AdminGetApiKey", "api-keys", "consumers", "AdminGetAuditEvents");
  const create = useMutation(admin.adminCreateApiKey, { onSuccess });
  const update = useMutation(admin.adminUpdateApiKey, { onSuccess });
  const ids = {
    name: useId(),
    policy: useId(),
    enabled: useId(),
    policyHint: useId(),
    consumer: useId(),
    consumerHint: useId(),
    description: useId(),
    expires: useId(),
    expiresHint: useId(),
    expiresError: useId(),
    environment: useId(),
    environmentHint: useId(),
    environmentError: useId(),
  };
  const env = parseEnvironment(environment);
  const envError = showErrors && "error" in env ? env.error : undefined;
  const expiresOnDate = fromLocalInput(expires);
  // An unchanged expiry on edit may already be past; only a new one must be in the future.
  const expiryError =
    showErrors && expires !== existingExpiry && expiresOnDate !== undefined && expiresOnDate.getTime() <= Date.now()
      ? "The expiry must be in the future."
      : undefined;
  const cidrErrors = invalidCidrs(cidrs);
  const pending = create.isPending || update.isPending;

  async function submit(e: FormEvent) {
    e.preventDefault();
    setShowErrors(true);
    const expiresOn = expiresOnDate;
    const pastExpiry = expires !== existingExpiry && expiresOn !== undefined && expiresOn.getTime() <= Date.now();
    if ("error" in env || pastExpiry || cidrErrors.length > 0) {
      // Open the section holding the error, and put the cursor in the first wrong field.
      setOptionsOpen(true);
      window.setTimeout(() => document.querySelector<HTMLElement>("dialog [aria-invalid='true']")?.focus());
      return;
    }
    const cidrList = parseCidrs(cidrs);
    const fields = {
      name: name.trim(),
      policyId,
      description: description.trim(),
      expiresOn: expiresOn && timestampFromDate(expiresOn),
      // An empty box means "any origin": on create an empty list says so, on update the list must.
      allowedCidrs: cidrList.length > 0 ? cidrList : ANY_ORIGIN,
      environment: env.value,
    };
    if (existing === undefined) {
      const res = await create.mutateAsync({
        ...fields,
        consumer,
        allowedCidrs: cidrList,
      });
      props.onCreated?.(res.token, res.apiKey?.name ?? name);
      return;
    }
    const paths: string[] = [];
    if (fields.name !== existing.name) paths.push("name");
    if (policyId !== existing.policy?.id) paths.push("policy_id");
    if (enabled !== existing.enabled) paths.push("enabled");
    if (fields.description !== existing.description) paths.push("description");
    if (expires !== existingExpiry) paths.push("expires_on");
    if (cidrs.trim() !== existingCidrs.trim()) paths.push("allowed_cidrs");
    if (JSON.stringify(env.value) !== JSON.stringify(existing.environment ?? {})) paths.push("environment");
    if (paths.length === 0) {
      props.onClose();
      return;
    }
    const res = await update.mutateAsync({ id: existing.id, ...fields, enabled, updateMask: { paths } });
    props.onSaved?.(res.apiKey?.name ?? name);
  }

  // A consumer's keys may only use the policies granted to it.
  const holder = consumers.data?.consumers.find((c) => c.id === consumer);
  const policyChoices = holder ? policies?.filter((p) => holder.grantedPolicies.some((g) => g.id === p.id)) : policies;
  const noPolicies = policies?.length === 0;
  // Fixed at open: a prop that changed with the fields would fold the section while the user types in it.
  const [optionsOpen, setOptionsOpen] = useState(
    () => existing !== undefined && (existingExpiry !== "" || existingCidrs !== "" || environment !== "" || description !== ""),
  );
  const setExpiryIn = (days: number | undefined) =>
    setExpires(days === undefined ? "" : toLocalInput(new Date(Date.now() + days * DAY_MS)));
  return (
    <Dialog title={existing ? `Edit ${existing.name}` : "New API key"} onClose={props.onClose}>
      <form onSubmit={(e) => void submit(e).catch(() => undefined)} aria-busy={pending}>
        <div className="field">
          <label htmlFor={ids.name}>Name</label>
          <input id={ids.name} required data-autofocus autoComplete="off" value={name} onChange={(e) => setName(e.target.value)} />
        </div>
        {existing === undefined && (consumers.data?.consumers.length ?? 0) > 0 && (
          <div className="field">
            <label htmlFor={ids.consumer}>Consumer</label>
            <select
              id={ids.consumer}
              value={consumer}
              aria-describedby={ids.consumerHint}
              onChange={(e) => {
                setConsumer(e.target.value);
                setPolicyId("");
              }}
            >
              <option value="">None</option>
              {consumers.data?.consumers.map((c) => (
                <option key={c.id} value={c.id}>
                  {c.username}
                </option>
              ))}
            </select>
            <p id={ids.consumerHint} className="muted">
              Who holds the key. The policy list then shows only the policies granted to that consumer.
            </p>
          </div>
        )}
        <div className="field">
          <label htmlFor={ids.policy}>Policy</label>
          <select
            id={ids.policy}
            required
            value={policyId}
            aria-describedby={ids.policyHint}
            onChange={(e) => setPolicyId(e.target.value)}
          >
            <option value="">{policies === undefined ? "Loading policies…" : "Choose a policy"}</option>
            {policyChoices?.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name} ({plural(p.permissions.length, "permission")})
              </option>
            ))}
          </select>
          <p id={ids.policyHint} className="muted">
            {noPolicies ? "There are no policies yet: create one on the Policies page first." : "The key can do exactly what its policy allows."}
          </p>
          <ErrorMessage error={policiesQuery.error} />
        </div>
        {existing !== undefined && (
          <div className="field checkbox">
            <input id={ids.enabled} type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.target.checked)} />
            <label htmlFor={ids.enabled}>Enabled</label>
          </div>
        )}
        <details className="options" open={optionsOpen} onToggle={(e) => setOptionsOpen(e.currentTarget.open)}>
          <summary>Description, expiry, allowed networks, environment</summary>
          <div className="field">
            <label htmlFor={ids.description}>Description</label>
            <input id={ids.description} autoComplete="off" value={description} onChange={(e) => setDescription(e.target.value)} />
          </div>
          <div className="field">
            <label htmlFor={ids.expires}>Expires</label>
            <input
              id={ids.expires}
              type="datetime-local"
              value={expires}
              aria-describedby={expiryError ? `${ids.expiresError} ${ids.expiresHint}` : ids.expiresHint}
              aria-invalid={expiryError !== undefined}
              onChange={(e) => setExpires(e.target.value)}
            />
            {expiryError && (
              <p id={ids.expiresError} className="field-error">
                {expiryError}
              </p>
            )}
            <div className="presets" role="group" aria-label="Expiry presets">
              {[7, 30, 90].map((days) => (
                <button key={days} type="button" className="secondary small" onClick={() => setExpiryIn(days)}>
                  {days} days
                </button>
              ))}
              <button type="button" className="secondary small" onClick={() => setExpiryIn(undefined)}>
                Never
              </button>
            </div>
            <p id={ids.expiresHint} className="muted">
              Your local time. Empty: never expires.
            </p>
          </div>
          <CidrField value={cidrs} onChange={setCidrs} showErrors={showErrors} />
          <div className="field">
            <label htmlFor={ids.environment}>Environment (JSON object)</label>
            <textarea
              id={ids.environment}
              className="mono"
              rows={3}
              placeholder={'{"region": "eu-west-1", "tier": 2}'}
              value={environment}
              aria-describedby={envError ? `${ids.environmentError} ${ids.environmentHint}` : ids.environmentHint}
              aria-invalid={envError !== undefined}
              onChange={(e) => setEnvironment(e.target.value)}
            />
            {envError && (
              <p id={ids.environmentError} className="field-error">
                {envError}
              </p>
            )}
            <p id={ids.environmentHint} className="muted">
              Flat variables returned to services by VerifyToken: strings, numbers or booleans.
            </p>
          </div>
        </details>
        <ErrorMessage error={create.error ?? update.error} />
        <div className="dialog-actions sticky">
          <button type="button" className="secondary" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={pending || noPolicies}>
            {existing ? (pending ? "Saving…" : "Save") : pending ? "Creating…" : "Create key"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

const GRACE_PERIODS = [
  { label: "Immediately", seconds: 0 },
  { label: "After 1 hour", seconds: 3600 },
  { label: "After 24 hours", seconds: 86_400 },
  { label: "After 7 days", seconds: 7 * 86_400 },
];

function RotateDialog(props: { apiKey: ApiKey; mine: boolean; onClose: () => void; onRotated: (token: string) => void }) {
  // A grace period by default: holders keep working while they switch to the new token.
  const [grace, setGrace] = useState(86_400);
  const invalidate = useInvalidate();
  const rotate = useMutation(admin.adminRotateApiKey, {
    onSuccess: () => invalidate("AdminGetApiKeys", "AdminGetApiKey", "AdminGetAuditEvents"),
  });
  const graceId = useId();

  async function submit(e: FormEvent) {
    e.preventDefault();
    const res = await rotate.mutateAsync({
      id: props.apiKey.id,
      gracePeriod: grace > 0 ? { seconds: BigInt(grace) } : undefined,
    });
    props.onRotated(res.token);
  }

  return (
    <Dialog title={`Rotate ${props.apiKey.name}`} onClose={props.onClose}>
      <form onSubmit={(e) => void submit(e).catch(() => undefined)} aria-busy={rotate.isPending}>
        <p>A new token is issued for this key. Its name, policy and settings stay the same.</p>
        {props.mine && (
          <p className="warning">
            This is <strong>your own key</strong>: once the current token stops working, sign in again with the new one.
          </p>
        )}
        <div className="field">
          <label htmlFor={graceId}>The current token stops working</label>
          <select id={graceId} data-autofocus value={grace} onChange={(e) => setGrace(Number(e.target.value))}>
            {GRACE_PERIODS.map((g) => (
              <option key={g.seconds} value={g.seconds}>
                {g.label}
              </option>
            ))}
          </select>
        </div>
        <ErrorMessage error={rotate.error} />
        <div className="dialog-actions">
          <button type="button" className="secondary" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={rotate.isPending}>
            {rotate.isPending ? "Rotating…" : "Rotate token"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function DeleteKeyDialog(props: { apiKey: ApiKey; mine: boolean; onClose: () => void; onDeleted: () => void }) {
  const invalidate = useInvalidate();
  const remove = useMutation(admin.adminDeleteApiKey, {
    onSuccess: async () => {
      await invalidate("AdminGetApiKeys", "api-keys", "consumers", "AdminGetConsumer", "AdminGetAuditEvents");
      props.onDeleted();
    },
  });
  return (
    <Dialog title={`Delete ${props.apiKey.name}?`} onClose={props.onClose}>
      <p>
        Its token (<code>{props.apiKey.start}…</code>) stops working at once, everywhere. This cannot be undone.
      </p>
      {props.mine && (
        <p className="warning">
          This is <strong>your own key</strong>: deleting it signs you out, and you will need another admin key to sign in.
        </p>
      )}
      <ErrorMessage error={remove.error} />
      <div className="dialog-actions">
        <button type="button" className="secondary" data-autofocus onClick={props.onClose}>
          Cancel
        </button>
        <button type="button" className="danger" disabled={remove.isPending} onClick={() => remove.mutate({ id: props.apiKey.id })}>
          {remove.isPending ? "Deleting…" : "Delete key"}
        </button>
      </div>
    </Dialog>
  );
}
