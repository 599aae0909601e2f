import { type Kysely, type RawBuilder, type SqlBool, type Transaction, sql } from "kysely";
import type { Writer } from "../db/write.js";
import {
  type FilterTerm,
  type SortColumn,
  containsPattern,
  decodePageToken,
  encodePageToken,
  parseFilter,
  parseOrderBy,
  queryDigest,
} from "../listing/list-query.js";
import type { Database } from "../db/schema.js";
import { type Authority, actorKeyId, requireHeldAdminPermissions, requireUnscoped, scopeOf } from "../auth/authority.js";
import { concurrentUpdate, invalidArgument, notFound } from "../errors.js";
import { isUuid, requireDescription, requireName, requirePageSize, requireUuid, resolveUpdateMask } from "../validation.js";
import type {
  AdminCreateApiKeyPolicyRequest,
  AdminUpdateApiKeyPolicyRequest,
} from "../gen/apikeys/v1/admin_pb.js";
import type { ApiKeyPolicy } from "../gen/apikeys/v1/resources_pb.js";
import { toPolicyMessage } from "./policy-message.js";
import { requirePermissionNames } from "../permissions/permission-name.js";
import { findUnknownPermissions } from "../permissions/permission.repository.js";
import { countKeysBy, deleteKeysOfPolicy } from "../keys/key.repository.js";
import * as repo from "./policy.repository.js";

const MAX_PERMISSIONS = 1000;

export { toPolicyMessage };

async function requireDeclared(db: Kysely<Database> | Transaction<Database>, field: string, names: readonly string[]): Promise<readonly string[]> {
  const permissions = requirePermissionNames(field, names);
  if (permissions.length > MAX_PERMISSIONS) throw invalidArgument(`${field}: at most ${MAX_PERMISSIONS} permissions`);
  const unknown = await findUnknownPermissions(db, permissions);
  if (unknown.length > 0) {
    throw invalidArgument(
      `${field}: unknown permission${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")} (no service declared ${unknown.length > 1 ? "them" : "it"})`,
    );
  }
  return permissions;
}

function describePolicy(policy: { id: string; name: string }): string {
  return `policy ${policy.name} (${policy.id})`;
}

const POLICY_ORDERS = {
  name: { expr: sql`p.name`, kind: "text", nullable: false },
  created_on: { expr: sql`p.created_on`, kind: "time", nullable: false },
} satisfies Record<string, SortColumn>;

function policyCondition(term: FilterTerm): RawBuilder<SqlBool> {
  if (term.field === "permission") {
    return sql<SqlBool>`exists (select 1 from policy_permissions pp where pp.policy_id = p.id and pp.permission = ${term.value})`;
  }
  return sql<SqlBool>`p.name ilike ${containsPattern(term.value)}`;
}

/** Lists policies (a consumer-scoped caller: only those granted to it; see AdminGetApiKeyPoliciesRequest): every one unless page_size is set. */
export async function listPolicies(
  db: Kysely<Database>,
  authority: Authority,
  req: { pageSize: number; pageToken: string; filter: string; orderBy: string },
): Promise<{ policies: ApiKeyPolicy[]; nextPageToken: string; totalSize: number; apiKeyCounts: Record<string, number> }> {
  const limit = requirePageSize(req.pageSize, undefined);
  const conditions = parseFilter(req.filter, ["name", "permission"]).map(policyCondition);
  const scope = scopeOf(authority);
  // A consumer-scoped caller sees only the policies granted to its consumer.
  if (scope !== undefined) {
    conditions.push(sql<SqlBool>`exists (select 1 from consumer_policies cp where cp.policy_id = p.id and cp.consumer_id = ${scope.id})`);
  }
  const ordering = parseOrderBy(req.orderBy, POLICY_ORDERS, "name");
  const digest = queryDigest(["policies", req.filter, ordering.name, ordering.descending]);
  const after = req.pageToken === "" ? undefined : decodePageToken(req.pageToken, digest, ordering.column, isUuid);

  const { policies, totalSize } = await repo.listPolicyPage(db, {
    limit: limit === undefined ? undefined : limit + 1,
    conditions,
    ordering,
    after,
  });
  const page = limit === undefined ? policies : policies.slice(0, limit);
  const last = page[page.length - 1];
  return {
    policies: page.map(({ policy }) => toPolicyMessage(policy)),
    nextPageToken: limit !== undefined && policies.length > limit && last ? encodePageToken(digest, last.cursor) : "",
    totalSize,
    apiKeyCounts: await countKeysBy(
      db,
      "policy_id",
      page.map(({ policy }) => policy.id),
    ),
  };
}

/**
 * The no-escalation rule for anything done to or with a policy (a key on it, a
 * grant of it): the caller must hold the policy's `apikeys:` permissions itself.
 * A policy that does not exist grants nothing (callers check existence, and
 * lock the policy, first).
 */
export async function requireAdministrablePolicy(
  db: Kysely<Database> | Transaction<Database>,
  authority: Authority,
  policyId: string,
): Promise<void> {
  if (authority.kind === "server") return;
  const policy = await repo.findPolicy(db, policyId);
  if (policy !== undefined) requireHeldAdminPermissions(authority, describePolicy(policy), policy.permissions);
}

/**
 * Creates a policy from declared permissions, which must not grant an
 * `apikeys:` permission the caller lacks; consumer-scoped callers create none.
 */
export async function createPolicy(
  w: Writer,
  authority: Authority,
  req: Pick<AdminCreateApiKeyPolicyRequest, "name" | "description" | "permissions">,
): Promise<ApiKeyPolicy> {
  requireUnscoped(authority, "creating a policy");
  const name = requireName("name", req.name);
  const description = requireDescription(req.description);
  const { tx } = w;
  const permissions = await requireDeclared(tx, "permissions", req.permissions);
  requireHeldAdminPermissions(authority, `policy ${name}`, permissions);
  const id = await repo.insertPolicy(tx, { name, description, created_by: actorKeyId(authority) });
  await repo.setPolicyPermissions(tx, id, permissions);
  w.wrote(id);
  return toPolicyMessage((await repo.findPolicy(tx, id))!);
}

/**
 * Updates a policy; every key that uses it sees the change at once. The caller
 * must hold the policy's `apikeys:` permissions before and after the change.
 */
export async function updatePolicy(w: Writer, authority: Authority, req: AdminUpdateApiKeyPolicyRequest): Promise<ApiKeyPolicy> {
  requireUnscoped(authority, "updating a policy");
  const id = requireUuid("id", req.id);
  const present = [
    ...(req.name !== undefined ? (["name"] as const) : []),
    ...(req.description !== undefined ? (["description"] as const) : []),
    ...(req.permissions.length > 0 ? (["permissions"] as const) : []),
  ];
  const fields = resolveUpdateMask(req.updateMask, ["name", "description", "permissions"] as const, present);
  const name = fields.has("name") ? requireName("name", req.name ?? "") : undefined;
  const description = fields.has("description") ? requireDescription(req.description ?? "") : undefined;
  const { tx } = w;
  const permissions = fields.has("permissions") ? await requireDeclared(tx, "permissions", req.permissions) : undefined;
  if ((await repo.lockPolicy(tx, id, "update")) === undefined) throw notFound(`policy ${id} not found`);
  const before = (await repo.findPolicy(tx, id))!;
  requireHeldAdminPermissions(authority, describePolicy(before), before.permissions);
  if (permissions !== undefined) {
    requireHeldAdminPermissions(authority, `${describePolicy(before)} as updated`, permissions);
  }
  await repo.updatePolicy(tx, id, { ...(name !== undefined && { name }), ...(description !== undefined && { description }) });
  if (permissions !== undefined) await repo.setPolicyPermissions(tx, id, permissions);
  await w.invalidate({ kind: "policy", id });
  w.wrote(id);
  return toPolicyMessage((await repo.findPolicy(tx, id))!);
}

/**
 * Deletes a policy and every key that uses it, in one transaction; the caller
 * must hold the policy's `apikeys:` permissions.
 */
export async function deletePolicy(w: Writer, authority: Authority, rawId: string): Promise<{ policy: ApiKeyPolicy; keysDeleted: number }> {
  requireUnscoped(authority, "deleting a policy");
  const id = requireUuid("id", rawId);
  const { tx } = w;
  if ((await repo.lockPolicy(tx, id, "update")) === undefined) throw notFound(`policy ${id} not found`);
  const policy = (await repo.findPolicy(tx, id))!;
  requireHeldAdminPermissions(authority, describePolicy(policy), policy.permissions);
  const keyIds = await deleteKeysOfPolicy(tx, id);
  if (!(await repo.deletePolicy(tx, id))) throw concurrentUpdate("policy vanished during delete");
  await w.invalidate({ kind: "policy", id });
  w.wrote(id);
  return { policy: toPolicyMessage(policy), keysDeleted: keyIds.length };
}
