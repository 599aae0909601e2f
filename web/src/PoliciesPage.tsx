import { useMutation, useQuery } from "@connectrpc/connect-query";
import { type FormEvent, useId, useState } from "react";
import { ApiKeysAdminService } from "../../src/gen/apikeys/v1/admin_pb.js";
import type { ApiKeyPolicy } from "../../src/gen/apikeys/v1/resources_pb.js";
import { Dialog, Empty, ErrorMessage, Loading, Notice } from "./components.js";
import { formatTime, isoTime, plural } from "./format.js";
import { LISTED_KEYS, useKeyPreview } from "./queries.js";
import { useInvalidate, useOffline, useSelf } from "./session.js";
import { PermissionPicker } from "./PermissionPicker.js";

const admin = ApiKeysAdminService.method;

type Modal = { kind: "create" } | { kind: "edit"; policy: ApiKeyPolicy } | { kind: "delete"; policy: ApiKeyPolicy };

export function PoliciesPage() {
  const policies = useQuery(admin.adminGetApiKeyPolicies, {});
  const [modal, setModal] = useState<Modal>();
  const [notice, setNotice] = useState<string>();
  const close = () => setModal(undefined);
  const self = useSelf();
  const offline = useOffline();
  const writeBlocked = offline ? "The server cannot be reached" : self.lacks("apikeys:policies.write");

  const list = policies.data?.policies ?? [];
  return (
    <section aria-labelledby="policies-title">
      <div className="page-header">
        <h1 id="policies-title">Policies</h1>
        <button type="button" className="primary" disabled={writeBlocked !== undefined} title={writeBlocked} onClick={() => setModal({ kind: "create" })}>
          New policy
        </button>
      </div>
      <p className="muted">A policy is a named set of permissions. Changing one changes every key that uses it, at once.</p>
      {writeBlocked !== undefined && !offline && (
        <p className="notice read-only" role="note">
          Read-only: {writeBlocked.replace(/^Your key/, "your key")}, so creating, editing and deleting policies are disabled.
        </p>
      )}
      <Notice message={notice} onDismiss={() => setNotice(undefined)} />
      {policies.isPending && <Loading what="policies" />}
      <ErrorMessage error={policies.error} />
      {policies.data !== undefined && list.length === 0 && (
        <Empty>
          <p>No policies yet.</p>
          <button type="button" className="primary" onClick={() => setModal({ kind: "create" })}>
            Create the first policy
          </button>
        </Empty>
      )}
      {list.length > 0 && (
        <div className="table-wrap">
          <table className="responsive">
            <caption className="sr-only">Policies ({list.length})</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Description</th>
                <th scope="col">Permissions</th>
                <th scope="col">Keys</th>
                <th scope="col">Updated</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((p) => (
                <tr key={p.id} data-policy-id={p.id}>
                  <th scope="row" data-label="Name">
                    {p.name}
                  </th>
                  <td data-label="Description">{p.description || <span className="muted">—</span>}</td>
                  <td data-label="Permissions">
                    <ul className="chips" aria-label={plural(p.permissions.length, "permission")}>
                      {p.permissions.map((name) => (
                        <li key={name}>
                          <code>{name}</code>
                        </li>
                      ))}
                    </ul>
                  </td>
                  <td data-label="Keys">{policies.data?.apiKeyCounts[p.id] ?? 0}</td>
                  <td data-label="Updated">
                    <time dateTime={isoTime(p.updatedOn)}>{formatTime(p.updatedOn)}</time>
                  </td>
                  <td className="actions">
                    <button
                      type="button"
                      className="secondary"
                      aria-label={`Edit ${p.name}`}
                      disabled={writeBlocked !== undefined}
                      title={writeBlocked}
                      onClick={() => setModal({ kind: "edit", policy: p })}
                    >
                      Edit
                    </button>
                    <button
                      type="button"
                      className="danger"
                      aria-label={`Delete ${p.name}`}
                      disabled={writeBlocked !== undefined}
                      title={writeBlocked}
                      onClick={() => setModal({ kind: "delete", policy: p })}
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
        <PolicyForm
          onClose={close}
          onSaved={(name) => {
            setNotice(`Policy ${name} created.`);
            close();
          }}
        />
      )}
      {modal?.kind === "edit" && (
        <PolicyForm
          existing={modal.policy}
          onClose={close}
          onSaved={(name) => {
            setNotice(`Policy ${name} saved.`);
            close();
          }}
        />
      )}
      {modal?.kind === "delete" && (
        <DeletePolicyDialog
          policy={modal.policy}
          onClose={close}
          onDeleted={(keysDeleted) => {
            setNotice(`Policy ${modal.policy.name} deleted, and ${plural(keysDeleted, "API key")} with it.`);
            close();
          }}
        />
      )}
    </section>
  );
}

function PolicyForm(props: { existing?: ApiKeyPolicy; onClose: () => void; onSaved: (name: string) => void }) {
  const { existing } = props;
  const catalogue = useQuery(admin.adminGetApiKeyPermissions, {});
  const [name, setName] = useState(existing?.name ?? "");
  const [description, setDescription] = useState(existing?.description ?? "");
  const [selected, setSelected] = useState<Set<string>>(() => new Set(existing?.permissions));
  const invalidate = useInvalidate();
  // Keys embed their policy's name, consumers their granted policies.
  const onSuccess = () => invalidate("AdminGetApiKeyPolicies", "AdminGetApiKeys", "AdminGetApiKey", "consumers", "AdminGetAuditEvents");
  const create = useMutation(admin.adminCreateApiKeyPolicy, { onSuccess });
  const update = useMutation(admin.adminUpdateApiKeyPolicy, { onSuccess });
  const ids = { name: useId(), description: useId() };
  const pending = create.isPending || update.isPending;

  async function submit(e: FormEvent) {
    e.preventDefault();
    const permissions = [...selected].sort();
    if (existing === undefined) {
      const res = await create.mutateAsync({ name: name.trim(), description: description.trim(), permissions });
      props.onSaved(res.policy?.name ?? name);
      return;
    }
    const paths: string[] = [];
    if (name.trim() !== existing.name) paths.push("name");
    if (description.trim() !== existing.description) paths.push("description");
    if (permissions.join("\n") !== [...existing.permissions].sort().join("\n")) paths.push("permissions");
    if (paths.length === 0) {
      props.onClose();
      return;
    }
    const res = await update.mutateAsync({
      id: existing.id,
      name: name.trim(),
      description: description.trim(),
      permissions,
      updateMask: { paths },
    });
    props.onSaved(res.policy?.name ?? name);
  }

  return (
    <Dialog title={existing ? `Edit policy ${existing.name}` : "New policy"} onClose={props.onClose} wide>
      <form onSubmit={(e) => void submit(e).catch(() => undefined)} aria-busy={pending}>
        <div className="field-row">
          <div className="field">
            <label htmlFor={ids.name}>Name</label>
            <input id={ids.name} required data-autofocus autoComplete="off" value={name} onChange={(e) => setName(e.target.value)} />
          </div>
          <div className="field grow">
            <label htmlFor={ids.description}>Description</label>
            <input id={ids.description} autoComplete="off" value={description} onChange={(e) => setDescription(e.target.value)} />
          </div>
        </div>
        {existing !== undefined && (
          <p className="warning">Changes apply at once to every key that uses this policy.</p>
        )}
        {catalogue.isPending && <Loading what="permissions" />}
        <ErrorMessage error={catalogue.error} />
        {catalogue.data !== undefined &&
          (catalogue.data.permissions.length === 0 ? (
            <p className="muted">No service has registered permissions yet.</p>
          ) : (
            <PermissionPicker catalogue={catalogue.data.permissions} selected={selected} onChange={setSelected} />
          ))}
        {catalogue.data !== undefined && selected.size === 0 && (
          <p className="warning" data-testid="empty-policy-warning">
            No permission is selected: keys of this policy will be refused everything they ask for.
          </p>
        )}
        {[...selected].some((p) => p.startsWith("apikeys:")) && (
          <p className="warning" data-testid="admin-grant-warning">
            <strong>Admin rights:</strong> this policy grants{" "}
            {[...selected].filter((p) => p.startsWith("apikeys:")).sort().join(", ")}, which let its keys manage keys, policies or
            the audit log of this service.
          </p>
        )}
        <ErrorMessage error={create.error ?? update.error} />
        <div className="dialog-actions sticky">
          <button type="button" className="secondary" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={pending}>
            {existing ? (pending ? "Saving…" : "Save policy") : pending ? "Creating…" : "Create policy"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function DeletePolicyDialog(props: { policy: ApiKeyPolicy; onClose: () => void; onDeleted: (keysDeleted: number) => void }) {
  const invalidate = useInvalidate();
  const remove = useMutation(admin.adminDeleteApiKeyPolicy, {
    onSuccess: async (res) => {
      await invalidate("AdminGetApiKeyPolicies", "AdminGetApiKeys", "AdminGetApiKey", "api-keys", "consumers", "AdminGetAuditEvents");
      props.onDeleted(res.apiKeysDeleted);
    },
  });
  // Counted fresh when the dialog opens; no longer asked once the delete is under way, as the policy is going away.
  const keys = useKeyPreview({ policyId: props.policy.id }, !remove.isPending && !remove.isSuccess);
  const count = keys.data?.totalSize;

  return (
    <Dialog title={`Delete policy ${props.policy.name}?`} onClose={props.onClose}>
      {keys.isFetching && <Loading what="the keys that use this policy" />}
      <ErrorMessage error={keys.error} />
      {count !== undefined && !keys.isFetching && (
        <div data-testid="policy-delete-impact">
          {count === 0 ? (
            <p>No API key uses this policy. Only the policy is deleted.</p>
          ) : (
            <>
              <p className="warning">
                <strong>This also deletes {plural(count, "API key")}</strong>; {count === 1 ? "its token stops" : "their tokens stop"}{" "}
                working at once. This cannot be undone.
              </p>
              <ul className="key-list">
                {keys.data?.apiKeys.map((k) => (
                  <li key={k.id}>
                    {k.name} <code>{k.start}…</code>
                  </li>
                ))}
                {count > LISTED_KEYS && <li>and {count - LISTED_KEYS} more</li>}
              </ul>
            </>
          )}
        </div>
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
          onClick={() => remove.mutate({ id: props.policy.id })}
        >
          {remove.isPending
            ? "Deleting…"
            : count === undefined || count === 0
              ? "Delete policy"
              : `Delete policy and ${plural(count, "key")}`}
        </button>
      </div>
    </Dialog>
  );
}
