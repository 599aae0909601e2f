import { useMutation, useQuery } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type FormEvent, useId, useMemo, useState } from "react";
import { ApiKeysAdminService } from "../../src/gen/apikeys/v1/admin_pb.js";
import type { ApiKey, ApiKeyPolicy } from "../../src/gen/apikeys/v1/resources_pb.js";
import { Dialog, Empty, ErrorMessage, Loading, Notice, TokenReveal } from "./components.js";
import { formatTime, fromLocalInput, isoTime, plural, toLocalInput } from "./format.js";
import { useAllConsumers, useAllKeys } from "./queries.js";

const admin = ApiKeysAdminService.method;

type Modal =
  | { kind: "create" }
  | { kind: "edit"; key: ApiKey }
  | { kind: "rotate"; key: ApiKey }
  | { kind: "delete"; key: ApiKey }
  | { kind: "token"; token: string; keyName: string; title: string };

export function KeysPage() {
  const keys = useAllKeys();
  const policies = useQuery(admin.adminGetApiKeyPolicies, {});
  const [search, setSearch] = useState("");
  const [modal, setModal] = useState<Modal>();
  const [notice, setNotice] = useState<string>();
  const queryClient = useQueryClient();
  const toggle = useMutation(admin.adminUpdateApiKey, {
    onSuccess: (res) => {
      setNotice(`${res.apiKey?.name} ${res.apiKey?.enabled ? "enabled" : "disabled"}.`);
      return queryClient.invalidateQueries();
    },
  });
  const searchId = useId();

  const visible = useMemo(() => {
    const q = search.trim().toLowerCase();
    const all = keys.data ?? [];
    if (q === "") return all;
    return all.filter((k) =>
      [k.name, k.description, k.consumerUsername, k.policy?.name ?? "", k.start, k.id].some((field) => field.toLowerCase().includes(q)),
    );
  }, [keys.data, search]);

  const close = () => setModal(undefined);

  return (
    <section aria-labelledby="keys-title">
      <div className="page-header">
        <h1 id="keys-title">API keys</h1>
        <button type="button" className="primary" onClick={() => setModal({ kind: "create" })}>
          New API key
        </button>
      </div>
      <p className="muted">Each key belongs to one policy, which decides what it may do. Tokens are never shown again after creation.</p>
      <Notice message={notice} onDismiss={() => setNotice(undefined)} />
      <ErrorMessage error={toggle.error} />

      <div className="toolbar">
        <label htmlFor={searchId}>Search</label>
        <input
          id={searchId}
          type="search"
          placeholder="Name, policy, consumer or token start"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
      </div>

      {keys.isPending && <Loading what="API keys" />}
      <ErrorMessage error={keys.error} />
      {keys.data?.length === 0 && (
        <Empty>
          <p>No API keys yet.</p>
          <button type="button" className="primary" onClick={() => setModal({ kind: "create" })}>
            Create the first key
          </button>
        </Empty>
      )}
      {keys.data !== undefined && keys.data.length > 0 && visible.length === 0 && (
        <Empty>
          <p>No key matches “{search}”.</p>
        </Empty>
      )}
      {visible.length > 0 && (
        <div className="table-wrap">
          <table className="responsive">
            <caption className="sr-only">API keys ({visible.length})</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Policy</th>
                <th scope="col">Token start</th>
                <th scope="col">Status</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {visible.map((k) => (
                <tr key={k.id} data-key-id={k.id}>
                  <th scope="row" data-label="Name">
                    {k.name}
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
                    <time dateTime={isoTime(k.createdOn)}>{formatTime(k.createdOn)}</time>
                  </td>
                  <td data-label="Last used">
                    <time dateTime={isoTime(k.lastUsedOn)}>{formatTime(k.lastUsedOn, "Never")}</time>
                  </td>
                  <td data-label="Expires">
                    <time dateTime={isoTime(k.expiresOn)}>{formatTime(k.expiresOn, "Never")}</time>
                  </td>
                  <td className="actions">
                    <button type="button" className="secondary" aria-label={`Edit ${k.name}`} onClick={() => setModal({ kind: "edit", key: k })}>
                      Edit
                    </button>
                    <button
                      type="button"
                      className="secondary"
                      aria-label={`${k.enabled ? "Disable" : "Enable"} ${k.name}`}
                      disabled={toggle.isPending}
                      onClick={() => toggle.mutate({ id: k.id, enabled: !k.enabled, updateMask: { paths: ["enabled"] } })}
                    >
                      {k.enabled ? "Disable" : "Enable"}
                    </button>
                    <button type="button" className="secondary" aria-label={`Rotate ${k.name}`} onClick={() => setModal({ kind: "rotate", key: k })}>
                      Rotate
                    </button>
                    <button type="button" className="danger" aria-label={`Delete ${k.name}`} onClick={() => setModal({ kind: "delete", key: k })}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}

      {modal?.kind === "create" && (
        <KeyForm
          policies={policies.data?.policies}
          policiesError={policies.error}
          onClose={close}
          onCreated={(token, keyName) => setModal({ kind: "token", token, keyName, title: "API key created" })}
        />
      )}
      {modal?.kind === "edit" && (
        <KeyForm
          existing={modal.key}
          policies={policies.data?.policies}
          policiesError={policies.error}
          onClose={close}
          onSaved={(name) => {
            setNotice(`${name} saved.`);
            close();
          }}
        />
      )}
      {modal?.kind === "rotate" && (
        <RotateDialog
          apiKey={modal.key}
          onClose={close}
          onRotated={(token) => setModal({ kind: "token", token, keyName: modal.key.name, title: "Token rotated" })}
        />
      )}
      {modal?.kind === "delete" && (
        <DeleteKeyDialog
          apiKey={modal.key}
          onClose={close}
          onDeleted={() => {
            setNotice(`${modal.key.name} deleted.`);
            close();
          }}
        />
      )}
      {modal?.kind === "token" && (
        <Dialog title={modal.title} onClose={close}>
          <TokenReveal token={modal.token} keyName={modal.keyName} />
          <div className="dialog-actions">
            <button type="button" className="primary" onClick={close}>
              I have copied the token
            </button>
          </div>
        </Dialog>
      )}
    </section>
  );
}

/** What a key admits when no CIDRs are given (the server's default): any IPv4 and any IPv6 address. */
const ANY_ORIGIN = ["0.0.0.0/0", "::/0"];

function parseCidrs(text: string): string[] {
  return text.split(/[\s,]+/).filter((c) => c !== "");
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
  if (apiKey.expiresOn && timestampDate(apiKey.expiresOn).getTime() <= Date.now()) {
    return <span className="badge off">Expired</span>;
  }
  return <span className="badge ok">Enabled</span>;
}

function KeyForm(props: {
  existing?: ApiKey;
  policies: ApiKeyPolicy[] | undefined;
  policiesError: unknown;
  onClose: () => void;
  onCreated?: (token: string, keyName: string) => void;
  onSaved?: (name: string) => void;
}) {
  const { existing } = props;
  const existingCidrs = existing && existing.allowedCidrs.join(" ") !== ANY_ORIGIN.join(" ") ? existing.allowedCidrs.join("\n") : "";
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
  const [formError, setFormError] = useState<string>();
  const queryClient = useQueryClient();
  const onSuccess = () => queryClient.invalidateQueries();
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
    cidrs: useId(),
    cidrsHint: useId(),
    environment: useId(),
    environmentHint: useId(),
  };
  const pending = create.isPending || update.isPending;

  async function submit(e: FormEvent) {
    e.preventDefault();
    setFormError(undefined);
    const env = parseEnvironment(environment);
    if ("error" in env) {
      setFormError(env.error);
      return;
    }
    const expiresOn = fromLocalInput(expires);
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
  const holder = consumers.data?.find((c) => c.id === consumer);
  const policyChoices = holder ? props.policies?.filter((p) => holder.grantedPolicies.some((g) => g.id === p.id)) : props.policies;
  const noPolicies = props.policies?.length === 0;
  // Fixed at open: a prop that changed with the fields would fold the section while the user types in it.
  const [optionsOpen] = useState(
    () => existing !== undefined && (existingExpiry !== "" || existingCidrs !== "" || environment !== "" || description !== ""),
  );
  return (
    <Dialog title={existing ? `Edit ${existing.name}` : "New API key"} onClose={props.onClose}>
      <form onSubmit={(e) => void submit(e).catch(() => undefined)} aria-busy={pending}>
        <div className="field">
          <label htmlFor={ids.name}>Name</label>
          <input id={ids.name} required data-autofocus autoComplete="off" value={name} onChange={(e) => setName(e.target.value)} />
        </div>
        {existing === undefined && (consumers.data?.length ?? 0) > 0 && (
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
              {consumers.data?.map((c) => (
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
            <option value="">{props.policies === undefined ? "Loading policies…" : "Choose a policy"}</option>
            {policyChoices?.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name} ({plural(p.permissions.length, "permission")})
              </option>
            ))}
          </select>
          <p id={ids.policyHint} className="muted">
            {noPolicies ? "There are no policies yet: create one on the Policies page first." : "The key can do exactly what its policy allows."}
          </p>
          <ErrorMessage error={props.policiesError} />
        </div>
        {existing !== undefined && (
          <div className="field checkbox">
            <input id={ids.enabled} type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.target.checked)} />
            <label htmlFor={ids.enabled}>Enabled</label>
          </div>
        )}
        <details className="options" open={optionsOpen}>
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
              aria-describedby={ids.expiresHint}
              onChange={(e) => setExpires(e.target.value)}
            />
            <p id={ids.expiresHint} className="muted">
              Your local time. Empty: never expires.
            </p>
          </div>
          <div className="field">
            <label htmlFor={ids.cidrs}>Allowed networks (CIDRs)</label>
            <textarea
              id={ids.cidrs}
              className="mono"
              rows={2}
              placeholder={"10.0.0.0/8\n2001:db8::/32"}
              value={cidrs}
              aria-describedby={ids.cidrsHint}
              onChange={(e) => setCidrs(e.target.value)}
            />
            <p id={ids.cidrsHint} className="muted">
              One per line. Empty: any address may use the key.
            </p>
          </div>
          <div className="field">
            <label htmlFor={ids.environment}>Environment (JSON object)</label>
            <textarea
              id={ids.environment}
              className="mono"
              rows={3}
              placeholder={'{"region": "eu-west-1", "tier": 2}'}
              value={environment}
              aria-describedby={ids.environmentHint}
              onChange={(e) => setEnvironment(e.target.value)}
            />
            <p id={ids.environmentHint} className="muted">
              Flat variables returned to services by VerifyToken: strings, numbers or booleans.
            </p>
          </div>
        </details>
        {formError !== undefined && (
          <p className="error" role="alert">
            {formError}
          </p>
        )}
        <ErrorMessage error={create.error ?? update.error} />
        <div className="dialog-actions">
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

function RotateDialog(props: { apiKey: ApiKey; onClose: () => void; onRotated: (token: string) => void }) {
  const [grace, setGrace] = useState(0);
  const queryClient = useQueryClient();
  const rotate = useMutation(admin.adminRotateApiKey, { onSuccess: () => queryClient.invalidateQueries() });
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

function DeleteKeyDialog(props: { apiKey: ApiKey; onClose: () => void; onDeleted: () => void }) {
  const queryClient = useQueryClient();
  const remove = useMutation(admin.adminDeleteApiKey, {
    onSuccess: async () => {
      await queryClient.invalidateQueries();
      props.onDeleted();
    },
  });
  return (
    <Dialog title={`Delete ${props.apiKey.name}?`} onClose={props.onClose}>
      <p>
        Its token (<code>{props.apiKey.start}…</code>) stops working at once, everywhere. This cannot be undone.
      </p>
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
