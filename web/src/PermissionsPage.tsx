import { useQuery } from "@connectrpc/connect-query";
import { useId, useMemo, useState } from "react";
import { ApiKeysAdminService } from "../../src/gen/apikeys/v1/admin_pb.js";
import { Empty, ErrorMessage, Loading } from "./components.js";
import { plural } from "./format.js";
import { groupByService, matchesSearch, shortName } from "./PermissionPicker.js";

export function PermissionsPage() {
  const permissions = useQuery(ApiKeysAdminService.method.adminGetApiKeyPermissions, {});
  const [search, setSearch] = useState("");
  const searchId = useId();
  const groups = useMemo(
    () => groupByService((permissions.data?.permissions ?? []).filter((p) => matchesSearch(p, search))),
    [permissions.data, search],
  );
  const total = permissions.data?.permissions.length ?? 0;

  return (
    <section aria-labelledby="permissions-title">
      <div className="page-header">
        <h1 id="permissions-title">Permissions</h1>
      </div>
      <p className="muted">
        What services declare with RegisterPermissions. A permission a service no longer declares is marked deprecated:
        policies keep it until you remove it.
      </p>
      <div className="toolbar">
        <label htmlFor={searchId}>Search</label>
        <input id={searchId} type="search" placeholder="Name or description" value={search} onChange={(e) => setSearch(e.target.value)} />
      </div>
      {permissions.isPending && <Loading what="permissions" />}
      <ErrorMessage error={permissions.error} />
      {permissions.data !== undefined && total === 0 && (
        <Empty>
          <p>No service has registered permissions yet.</p>
        </Empty>
      )}
      {total > 0 && groups.length === 0 && (
        <Empty>
          <p>No permission matches “{search}”.</p>
        </Empty>
      )}
      {groups.map(([service, perms]) => (
        <section key={service} className="card service" aria-labelledby={`service-${service}`}>
          <h2 id={`service-${service}`}>
            {service} <span className="muted count">{plural(perms.length, "permission")}</span>
          </h2>
          <table className="responsive">
            <thead>
              <tr>
                <th scope="col">Permission</th>
                <th scope="col">Description</th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {perms.map((p) => (
                <tr key={p.name} className={p.deprecated ? "deprecated" : undefined}>
                  <th scope="row" data-label="Permission">
                    <code title={p.name}>{shortName(p)}</code>
                  </th>
                  <td data-label="Description">{p.description || <span className="muted">No description.</span>}</td>
                  <td data-label="Status">
                    {p.deprecated ? <span className="badge off">Deprecated</span> : <span className="badge ok">Declared</span>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ))}
    </section>
  );
}
