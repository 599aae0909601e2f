import { useMutation, useQuery } from "@connectrpc/connect-query";
import { type FormEvent, useId, useMemo, useState } from "react";
import { ApiKeysAdminService } from "../../src/gen/apikeys/v1/admin_pb.js";
import type { Consumer } from "../../src/gen/apikeys/v1/consumers_pb.js";
import { adminClient } from "./api.js";
import { Dialog, Empty, ErrorMessage, Loading, Notice } from "./components.js";
import { formatTime, isoTime, plural } from "./format.js";
import { LISTED_KEYS, useAllConsumers, useKeyPreview } from "./queries.js";
import { useInvalidate } from "./session.js";

const admin = ApiKeysAdminService.method;

type Modal = { kind: "create" } | { kind: "grants"; consumer: Consumer } | { kind: "delete"; consumer: Consumer };

export function ConsumersPage() {
  const consumers = useAllConsumers();
  const [modal, setModal] = useState<Modal>();
  const [notice, setNotice] = useState<string>();
  const close = () => setModal(undefined);

  const keyCounts = consumers.data?.apiKeyCounts;
  const list = consumers.data?.consumers ?? [];
  return (
    <section aria-labelledby="consumers-title">
      <div className="page-header">
        <h1 id="consumers-title">Consumers</h1>
        <button type="button" className="primary" onClick={() => setModal({ kind: "create" })}>
          New consumer
        </button>
      </div>
      <p className="muted">
        A consumer is who holds keys: a team, a partner or a service. It may hold keys only on the policies granted to it,
        and deleting it deletes its keys.
      </p>
      <Notice message={notice} onDismiss={() => setNotice(undefined)} />
      {consumers.isPending && <Loading what="consumers" />}
      <ErrorMessage error={consumers.error} />
      {consumers.data !== undefined && list.length === 0 && (
        <Empty>
          <p>No consumers yet.</p>
          <button type="button" className="primary" onClick={() => setModal({ kind: "create" })}>
            Create the first consumer
          </button>
        </Empty>
      )}
      {list.length > 0 && (
        <div className="table-wrap">
          <table className="responsive">
            <caption className="sr-only">Consumers ({list.length})</caption>
            <thead>
              <tr>
                <th scope="col">Username</th>
                <th scope="col">Granted policies</th>
                <th scope="col">Keys</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((c) => (
                <tr key={c.id}>
                  <th scope="row" data-label="Username">
                    {c.username}
                  </th>
                  <td data-label="Granted policies">
                    {c.grantedPolicies.length === 0 ? (
                      <span className="muted">None</span>
                    ) : (
                      <ul className="chips">
                        {c.grantedPolicies.map((p) => (
                          <li key={p.id}>{p.name}</li>
                        ))}
                      </ul>
                    )}
                  </td>
                  <td data-label="Keys">{keyCounts?.get(c.id) ?? 0}</td>
                  <td data-label="Created">
                    <time dateTime={isoTime(c.createdOn)}>{formatTime(c.createdOn)}</time>
                  </td>
                  <td className="actions">
                    <button
                      type="button"
                      className="secondary"
                      aria-label={`Policies of ${c.username}`}
                      onClick={() => setModal({ kind: "grants", consumer: c })}
                    >
                      Policies
                    </button>
                    <button
                      type="button"
                      className="danger"
                      aria-label={`Delete ${c.username}`}
                      onClick={() => setModal({ kind: "delete", consumer: c })}
                    >
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
        <CreateConsumerDialog
          onClose={close}
          onCreated={(username) => {
            setNotice(`Consumer ${username} created. Grant it policies before creating its keys.`);
            close();
          }}
        />
      )}
      {modal?.kind === "grants" && (
        <GrantsDialog
          consumer={modal.consumer}
          onClose={close}
          onSaved={() => {
            setNotice(`Policies of ${modal.consumer.username} saved.`);
            close();
          }}
        />
      )}
      {modal?.kind === "delete" && (
        <DeleteConsumerDialog
          consumer={modal.consumer}
          onClose={close}
          onDeleted={(keysDeleted) => {
            setNotice(`Consumer ${modal.consumer.username} deleted, and ${plural(keysDeleted, "API key")} with it.`);
            close();
          }}
        />
      )}
    </section>
  );
}

function CreateConsumerDialog(props: { onClose: () => void; onCreated: (username: string) => void }) {
  const [username, setUsername] = useState("");
  const invalidate = useInvalidate();
  const create = useMutation(admin.adminCreateConsumer, { onSuccess: () => invalidate("consumers", "AdminGetAuditEvents") });
  const ids = { username: useId(), hint: useId() };

  async function submit(e: FormEvent) {
    e.preventDefault();
    const res = await create.mutateAsync({ username: username.trim() });
    props.onCreated(res.consumer?.username ?? username);
  }

  return (
    <Dialog title="New consumer" onClose={props.onClose}>
      <form onSubmit={(e) => void submit(e).catch(() => undefined)} aria-busy={create.isPending}>
        <div className="field">
          <label htmlFor={ids.username}>Username</label>
          <input
            id={ids.username}
            required
            data-autofocus
            autoComplete="off"
            aria-describedby={ids.hint}
            value={username}
            onChange={(e) => setUsername(e.target.value)}
          />
          <p id={ids.hint} className="muted">
            Unique and permanent: no spaces, not a UUID. E.g. <code>payments-team</code>.
          </p>
        </div>
        <ErrorMessage error={create.error} />
        <div className="dialog-actions">
          <button type="button" className="secondary" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={create.isPending}>
            {create.isPending ? "Creating…" : "Create consumer"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function GrantsDialog(props: { consumer: Consumer; onClose: () => void; onSaved: () => void }) {
  const policies = useQuery(admin.adminGetApiKeyPolicies, {});
  const granted = useMemo(() => new Set(props.consumer.grantedPolicies.map((p) => p.id)), [props.consumer]);
  const [selected, setSelected] = useState<Set<string>>(() => new Set(granted));
  const [error, setError] = useState<unknown>();
  const [pending, setPending] = useState(false);
  const invalidate = useInvalidate();

  async function submit(e: FormEvent) {
    e.preventDefault();
    const grant = [...selected].filter((id) => !granted.has(id));
    const revoke = [...granted].filter((id) => !selected.has(id));
    setPending(true);
    setError(undefined);
    try {
      // Grants first: if the revoke is refused (a key still uses the policy), the grants are kept and the error says why.
      if (grant.length > 0) await adminClient.adminGrantConsumerPolicies({ consumer: props.consumer.id, policyIds: grant });
      if (revoke.length > 0) await adminClient.adminRevokeConsumerPolicies({ consumer: props.consumer.id, policyIds: revoke });
      await invalidate("consumers", "AdminGetConsumer", "AdminGetAuditEvents");
      props.onSaved();
    } catch (err) {
      setError(err);
      await invalidate("consumers", "AdminGetConsumer", "AdminGetAuditEvents");
    } finally {
      setPending(false);
    }
  }

  return (
    <Dialog title={`Policies of ${props.consumer.username}`} onClose={props.onClose}>
      <form onSubmit={(e) => void submit(e)} aria-busy={pending}>
        <p className="muted">The consumer may hold keys on the ticked policies. A policy its keys still use cannot be withdrawn.</p>
        {policies.isPending && <Loading what="policies" />}
        <ErrorMessage error={policies.error} />
        <fieldset className="plain">
          <legend className="sr-only">Granted policies</legend>
          {policies.data?.policies.map((p) => (
            <PolicyCheckbox
              key={p.id}
              name={p.name}
              description={p.description}
              checked={selected.has(p.id)}
              onChange={(on) => {
                const next = new Set(selected);
                if (on) next.add(p.id);
                else next.delete(p.id);
                setSelected(next);
              }}
            />
          ))}
        </fieldset>
        <ErrorMessage error={error} />
        <div className="dialog-actions">
          <button type="button" className="secondary" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={pending}>
            {pending ? "Saving…" : "Save"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function PolicyCheckbox(props: { name: string; description: string; checked: boolean; onChange: (on: boolean) => void }) {
  const id = useId();
  return (
    <div className="picker-item">
      <input id={id} type="checkbox" checked={props.checked} onChange={(e) => props.onChange(e.target.checked)} />
      <label htmlFor={id}>
        {props.name}
        {props.description !== "" && <span className="description">{props.description}</span>}
      </label>
    </div>
  );
}

function DeleteConsumerDialog(props: { consumer: Consumer; onClose: () => void; onDeleted: (keysDeleted: number) => void }) {
  const invalidate = useInvalidate();
  const remove = useMutation(admin.adminDeleteConsumer, {
    onSuccess: async (res) => {
      await invalidate("consumers", "AdminGetConsumer", "AdminGetApiKeys", "AdminGetApiKey", "api-keys", "AdminGetAuditEvents");
      props.onDeleted(res.apiKeysDeleted);
    },
  });
  // Counted fresh when the dialog opens; no longer asked once the delete is under way, as the consumer is going away.
  const keys = useKeyPreview({ consumer: props.consumer.id }, !remove.isPending && !remove.isSuccess);
  const count = keys.data?.totalSize;
  const names = keys.data?.apiKeys.map((k) => k.name).join(", ");
  return (
    <Dialog title={`Delete consumer ${props.consumer.username}?`} onClose={props.onClose}>
      {keys.isFetching && <Loading what="the consumer's keys" />}
      <ErrorMessage error={keys.error} />
      {count !== undefined && !keys.isFetching && (
        <p className={count > 0 ? "warning" : undefined}>
          {count === 0
            ? "The consumer holds no keys."
            : `This also deletes its ${plural(count, "API key")} (${names}${count > LISTED_KEYS ? ` and ${count - LISTED_KEYS} more` : ""}); their tokens stop working at once.`}
        </p>
      )}
      <ErrorMessage error={remove.error} />
      <div className="dialog-actions">
        <button type="button" className="secondary" data-autofocus onClick={props.onClose}>
          Cancel
        </button>
        <button
          type="button"
          className="danger"
          disabled={count === undefined || keys.isFetching || remove.isPending}
          onClick={() => remove.mutate({ consumer: props.consumer.id })}
        >
          {remove.isPending ? "Deleting…" : count ? `Delete consumer and ${plural(count, "key")}` : "Delete consumer"}
        </button>
      </div>
    </Dialog>
  );
}
