import { useId, useMemo, useState } from "react";
import type { Permission } from "../../src/gen/apikeys/v1/resources_pb.js";
import { plural } from "./format.js";

/** Permissions grouped by service, in the server's (service, name) order. */
export function groupByService(permissions: readonly Permission[]): [string, Permission[]][] {
  const groups = new Map<string, Permission[]>();
  for (const p of permissions) {
    const group = groups.get(p.service);
    if (group) group.push(p);
    else groups.set(p.service, [p]);
  }
  return [...groups];
}

/** `permission` without its service prefix, as shown under the service's heading. */
export function shortName(permission: Permission): string {
  const prefix = `${permission.service}:`;
  return permission.name.startsWith(prefix) ? permission.name.slice(prefix.length) : permission.name;
}

export function matchesSearch(permission: Permission, query: string): boolean {
  const q = query.trim().toLowerCase();
  return q === "" || [permission.name, permission.description].some((s) => s.toLowerCase().includes(q));
}

/**
 * The permission catalogue as checkboxes. Searching only hides rows: a
 * permission chosen and then filtered out stays chosen.
 */
export function PermissionPicker(props: {
  catalogue: readonly Permission[];
  selected: ReadonlySet<string>;
  onChange: (selected: Set<string>) => void;
}) {
  const [search, setSearch] = useState("");
  const searchId = useId();
  const groups = useMemo(
    () =>
      groupByService(props.catalogue)
        .map(([service, perms]) => [service, perms.filter((p) => matchesSearch(p, search))] as const)
        .filter(([, perms]) => perms.length > 0),
    [props.catalogue, search],
  );

  function toggle(name: string, on: boolean) {
    const next = new Set(props.selected);
    if (on) next.add(name);
    else next.delete(name);
    props.onChange(next);
  }

  return (
    <div className="picker">
      <div className="picker-toolbar">
        <label htmlFor={searchId}>Search permissions</label>
        <input id={searchId} type="search" placeholder="Name or description" value={search} onChange={(e) => setSearch(e.target.value)} />
        <span className="muted" role="status" aria-live="polite">
          {plural(props.selected.size, "permission")} selected
        </span>
      </div>
      {props.selected.size > 0 && (
        <ul className="chips picker-selected" aria-label="Selected permissions">
          {[...props.selected].sort().map((name) => (
            <li key={name}>
              <code>{name}</code>
            </li>
          ))}
        </ul>
      )}
      <div className="picker-groups">
        {groups.length === 0 && <p className="muted">No permission matches “{search}”.</p>}
        {groups.map(([service, perms]) => (
          <fieldset key={service} className="picker-group">
            <legend>{service}</legend>
            <ServiceToggle service={service} permissions={perms} selected={props.selected} onChange={props.onChange} />
            {perms.map((p) => (
              <PermissionCheckbox key={p.name} permission={p} checked={props.selected.has(p.name)} onToggle={toggle} />
            ))}
          </fieldset>
        ))}
      </div>
    </div>
  );
}

function PermissionCheckbox(props: { permission: Permission; checked: boolean; onToggle: (name: string, on: boolean) => void }) {
  const id = useId();
  const { permission: p } = props;
  return (
    <div className="picker-item">
      <input id={id} type="checkbox" checked={props.checked} onChange={(e) => props.onToggle(p.name, e.target.checked)} />
      <label htmlFor={id}>
        <code>{p.name}</code>
        {p.deprecated && <span className="badge off">deprecated</span>}
        <span className="description">{p.description || "No description."}</span>
      </label>
    </div>
  );
}

/** Selects or clears every (shown) permission of one service at once. */
function ServiceToggle(props: {
  service: string;
  permissions: readonly Permission[];
  selected: ReadonlySet<string>;
  onChange: (selected: Set<string>) => void;
}) {
  const all = props.permissions.every((p) => props.selected.has(p.name));
  return (
    <button
      type="button"
      className="link-button select-all"
      onClick={() => {
        const next = new Set(props.selected);
        for (const p of props.permissions) {
          if (all) next.delete(p.name);
          else next.add(p.name);
        }
        props.onChange(next);
      }}
    >
      {all ? `Clear all of ${props.service}` : `Select all of ${props.service}`}
    </button>
  );
}
