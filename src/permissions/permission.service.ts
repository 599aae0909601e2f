import { create } from "@bufbuild/protobuf";
import type { Authority } from "../auth/authority.js";
import type { PermissionRow } from "../db/schema.js";
import type { Writer } from "../db/write.js";
import { invalidArgument, permissionDenied } from "../errors.js";
import { type Permission, PermissionSchema } from "../gen/apikeys/v1/resources_pb.js";
import { isValidPart } from "./permission-name.js";
import * as repo from "./permission.repository.js";

/** The namespace of the service's own permissions; only the server registers it. */
export const OWN_SERVICE = "apikeys";

/** Whether only the server may declare `service`: "apikeys" and every name that starts like it ("apikeys.x", "apikeys-admin"). */
export function isReservedNamespace(service: string): boolean {
  return service.startsWith(OWN_SERVICE);
}

const MAX_DESCRIPTION = 1000;
const MAX_PERMISSIONS = 1000;

/** Maps a permission row to its message. */
export function toPermissionMessage(row: PermissionRow): Permission {
  return create(PermissionSchema, {
    name: row.name,
    service: row.service,
    description: row.description,
    deprecated: row.deprecated,
  });
}

/**
 * Declares `service`'s permissions: upserts the given ones and deprecates the
 * ones it no longer sends. Returns the service's permissions afterwards. A
 * namespace belongs to whoever first registers it (the caller's consumer, or
 * its policy when its key has none): anyone else is refused, and reserved
 * namespaces are the server's alone.
 */
export async function registerPermissions(
  w: Writer,
  authority: Authority,
  service: string,
  declared: ReadonlyArray<{ name: string; description: string }>,
): Promise<PermissionRow[]> {
  if (!isValidPart(service)) {
    throw invalidArgument(`service must match [a-z][a-z0-9_.-]* (at most 100 characters), got "${service.slice(0, 100)}"`);
  }
  if (authority.kind === "key" && isReservedNamespace(service)) {
    throw permissionDenied(`the "${service}" namespace is reserved: only the apikeys server declares namespaces starting with "${OWN_SERVICE}"`);
  }
  if (declared.length > MAX_PERMISSIONS) throw invalidArgument(`at most ${MAX_PERMISSIONS} permissions per service`);
  const seen = new Set<string>();
  const permissions = declared.map((p) => {
    const short = p.name.startsWith(`${service}:`) ? p.name.slice(service.length + 1) : p.name;
    if (!isValidPart(short)) {
      throw invalidArgument(
        `permission "${p.name.slice(0, 210)}" must be a short name matching [a-z][a-z0-9_.-]* or "${service}:<name>"`,
      );
    }
    const canonical = `${service}:${short}`;
    if (seen.has(canonical)) throw invalidArgument(`permission "${canonical}" is declared twice`);
    seen.add(canonical);
    if (p.description.length > MAX_DESCRIPTION) {
      throw invalidArgument(`description of "${canonical}" must be at most ${MAX_DESCRIPTION} characters`);
    }
    return { name: canonical, description: p.description };
  });
  const { tx } = w;
  if (authority.kind === "key") {
    const caller: repo.NamespaceOwner = authority.consumer ? { consumerId: authority.consumer.id } : { policyId: authority.policyId };
    const owner = await repo.claimNamespace(tx, service, caller, authority.keyId);
    if (owner.consumerId !== caller.consumerId || owner.policyId !== caller.policyId) {
      throw permissionDenied(
        `the "${service}" namespace is owned by another ${owner.consumerId !== undefined ? "consumer" : "policy"}, the first to register it; your key registers for its ${caller.consumerId !== undefined ? "consumer" : "policy"}, so it may not`,
      );
    }
  }
  await repo.upsertPermissions(tx, service, permissions);
  await repo.deprecateOtherPermissions(tx, service, [...seen]);
  return repo.listServicePermissions(tx, service);
}
