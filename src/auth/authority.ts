import type { ContextValues } from "@connectrpc/connect";
import { permissionDenied, unauthenticated } from "../errors.js";
import { authenticatedKey } from "./auth-context.js";

/** Prefix of the permissions that administer this service itself. */
const ADMIN_PREFIX = "apikeys:";

/**
 * What the caller of a domain write may do: the `apikeys:` permissions it holds
 * and the consumer its key belongs to. The server itself (bootstrap, start-up
 * registration) acts with every right.
 */
export type Authority =
  | { kind: "server" }
  | {
      kind: "key";
      keyId: string;
      policyId: string;
      /** The caller's `apikeys:` permissions. */
      adminPermissions: ReadonlySet<string>;
      /** Set when the caller's key belongs to a consumer: it then administers only that consumer's keys. */
      consumer: { id: string; username: string } | null;
    };

export const SERVER_AUTHORITY: Authority = { kind: "server" };

/** The `apikeys:` permissions among `permissions`, sorted. */
export function adminPermissionsAmong(permissions: readonly string[]): string[] {
  return permissions.filter((p) => p.startsWith(ADMIN_PREFIX)).sort();
}

/**
 * The authority of the current call, from the key the auth interceptor verified.
 * A call without one has none: the server's own work passes SERVER_AUTHORITY
 * itself, so a method wrongly made public cannot act with the server's rights.
 */
export function authorityOf(values: ContextValues): Authority {
  const key = values.get(authenticatedKey);
  if (key === undefined) throw unauthenticated("this call needs an API key");
  return {
    kind: "key",
    keyId: key.id,
    policyId: key.policy.id,
    adminPermissions: new Set(adminPermissionsAmong(key.policy.permissions)),
    consumer: key.consumer,
  };
}

/** The id recorded as creator of what the caller creates (null for the server). */
export function actorKeyId(authority: Authority): string | null {
  return authority.kind === "key" ? authority.keyId : null;
}

/** The consumer the caller is confined to, or undefined when it is not. */
export function scopeOf(authority: Authority): { id: string; username: string } | undefined {
  return authority.kind === "key" && authority.consumer !== null ? authority.consumer : undefined;
}

/**
 * The no-escalation rule: a caller may only write something (a key on a policy,
 * a policy, a grant) whose `apikeys:` permissions it holds itself. `what` names
 * the thing, e.g. `policy "ops" (id …)`; the refusal names each missing permission.
 */
export function requireHeldAdminPermissions(authority: Authority, what: string, permissions: readonly string[]): void {
  if (authority.kind === "server") return;
  const missing = adminPermissionsAmong(permissions).filter((p) => !authority.adminPermissions.has(p));
  if (missing.length === 0) return;
  throw permissionDenied(
    `${what} grants ${missing.join(", ")}, which your key lacks; a key can only administer what it holds itself`,
  );
}

/** Refuses consumer-scoped callers: `action` is only for keys that belong to no consumer. */
export function requireUnscoped(authority: Authority, action: string): void {
  const scope = scopeOf(authority);
  if (scope === undefined) return;
  throw permissionDenied(
    `your key belongs to consumer ${scope.username}, so it administers only that consumer's keys; ${action} needs a key with no consumer`,
  );
}

/** Refuses a consumer-scoped caller acting on a key of another consumer (or of none). */
export function requireInScope(authority: Authority, keyId: string, keyConsumerId: string | null): void {
  const scope = scopeOf(authority);
  if (scope === undefined || scope.id === keyConsumerId) return;
  throw permissionDenied(
    `API key ${keyId} is not a key of consumer ${scope.username}, the only consumer your key administers`,
  );
}
