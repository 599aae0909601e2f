import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Kysely, type RawBuilder, type SqlBool, type Transaction, sql } from "kysely";
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
import { Code, ConnectError } from "@connectrpc/connect";
import type { Database } from "../db/schema.js";
import { type Authority, actorKeyId, requireHeldAdminPermissions, requireUnscoped, scopeOf } from "../auth/authority.js";
import { invalidArgument, isUuid, notFound, requireName, requireUuid, withConnectErrors } from "../errors.js";
import type {
  AdminCreateApiKeyPolicyRequest,
  AdminUpdateApiKeyPolicyRequest,
} from "../gen/apikeys/v1/admin_pb.js";
import { type ApiKeyPolicy, ApiKeyPolicySchema } from "../gen/apikeys/v1/resources_pb.js";
import { notifyInvalidation } from "../invalidation/invalidation.js";
import { requirePermissionNames } from "../permissions/permission-name.js";
import { findUnknownPermissions } from "../permissions/permission.repository.js";
import { countKeysBy, deleteKeysOfPolicy } from "../keys/key.repository.js";
import { resolveUpdateMask } from "../update-mask.js";
import * as repo from "./policy.repository.js";

const MAX_DESCRIPTION = 2000;
const MAX_PERMISSIONS = 1000;

/**
 * Runs inside a policy write's transaction before commit, with the id of the
 * policy written (e.g. to record an audit event atomically).
 */
export type PolicyWriteHook = (tx: Transaction<Database>, policyId: string) => Promise<void>;

/** Maps a policy (row or cached record) to its message. */
export function toPolicyMessage(p: {
  id: string;
  name: string;
  description: string;
  permissions: string[];
  created_on?: Date;
  updated_on?: Date;
  created_by?: string | null;
  createdOn?: Date;
  updatedOn?: Date;
  createdBy?: string | null;
}): ApiKeyPolicy {
  const createdOn = p.created_on ?? p.createdOn;
  const updatedOn = p.updated_on ?? p.updatedOn;
  return create(ApiKeyPolicySchema, {
    id: p.id,
    name: p.name,
    description: p.description,
    permissions: p.permissions,
    createdOn: createdOn && timestampFromDate(createdOn),
    updatedOn: updatedOn && timestampFromDate(updatedOn),
    createdBy: (p.created_by ?? p.createdBy) ?? "",
  });
}

function requireDescription(description: string): string {
  if (description.length > MAX_DESCRIPTION) throw invalidArgument(`description must be at most ${MAX_DESCRIPTION} characters`);
  return description;
}

async function requireDeclared(db: Kysely<Database>, field: string, names: readonly string[]): Promise<string[]> {
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

const MAX_PAGE_SIZE = 1000;

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
export function listPolicies(
  db: Kysely<Database>,
  authority: Authority,
  req: { pageSize: number; pageToken: string; filter: string; orderBy: string },
): Promise<{ policies: ApiKeyPolicy[]; nextPageToken: string; totalSize: number; apiKeyCounts: Record<string, number> }> {
  if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) {
    throw invalidArgument(`page_size must be between 0 and ${MAX_PAGE_SIZE}`);
  }
  const conditions = parseFilter(req.filter, ["name", "permission"]).map(policyCondition);
  const scope = scopeOf(authority);
  // A consumer-scoped caller sees only the policies granted to its consumer.
  if (scope !== undefined) {
    conditions.push(sql<SqlBool>`exists (select 1 from consumer_policies cp where cp.policy_id = p.id and cp.consumer_id = ${scope.id})`);
  }
  const ordering = parseOrderBy(req.orderBy, POLICY_ORDERS, "name");
  const digest = queryDigest(["policies", req.filter, ordering.name, ordering.descending]);
  const after = req.pageToken === "" ? undefined : decodePageToken(req.pageToken, digest, ordering.column, isUuid);
  const limit = req.pageSize === 0 ? undefined : req.pageSize;
  return withConnectErrors(async () => {
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
  });
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
export function createPolicy(
  db: Kysely<Database>,
  req: Pick<AdminCreateApiKeyPolicyRequest, "name" | "description" | "permissions">,
  authority: Authority,
  hook?: PolicyWriteHook,
): Promise<ApiKeyPolicy> {
  requireUnscoped(authority, "creating a policy");
  const name = requireName("name", req.name);
  const description = requireDescription(req.description);
  return withConnectErrors(async () => {
    const permissions = await requireDeclared(db, "permissions", req.permissions);
    requireHeldAdminPermissions(authority, `policy ${name}`, permissions);
    return db.transaction().execute(async (tx) => {
      const id = await repo.insertPolicy(tx, { name, description, created_by: actorKeyId(authority) });
      await repo.setPolicyPermissions(tx, id, permissions);
      await hook?.(tx, id);
      const policy = await repo.findPolicy(tx, id);
      return toPolicyMessage(policy!);
    });
  });
}

/**
 * Updates a policy; every key that uses it sees the change at once. The caller
 * must hold the policy's `apikeys:` permissions before and after the change.
 */
export function updatePolicy(
  db: Kysely<Database>,
  authority: Authority,
  req: AdminUpdateApiKeyPolicyRequest,
  hook?: PolicyWriteHook,
): Promise<ApiKeyPolicy> {
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
  return withConnectErrors(async () => {
    const permissions = fields.has("permissions") ? await requireDeclared(db, "permissions", req.permissions) : undefined;
    return db.transaction().execute(async (tx) => {
      if ((await repo.lockPolicy(tx, id, "update")) === undefined) throw notFound(`policy ${id} not found`);
      const before = (await repo.findPolicy(tx, id))!;
      requireHeldAdminPermissions(authority, describePolicy(before), before.permissions);
      if (permissions !== undefined) {
        requireHeldAdminPermissions(authority, `${describePolicy(before)} as updated`, permissions);
      }
      await repo.updatePolicy(tx, id, { ...(name !== undefined && { name }), ...(description !== undefined && { description }) });
      if (permissions !== undefined) await repo.setPolicyPermissions(tx, id, permissions);
      await notifyInvalidation(tx, { kind: "policy", id });
      await hook?.(tx, id);
      return toPolicyMessage((await repo.findPolicy(tx, id))!);
    });
  });
}

/**
 * Deletes a policy and every key that uses it, in one transaction; the caller
 * must hold the policy's `apikeys:` permissions.
 */
export function deletePolicy(
  db: Kysely<Database>,
  authority: Authority,
  rawId: string,
  hook?: PolicyWriteHook,
): Promise<{ policy: ApiKeyPolicy; keysDeleted: number }> {
  requireUnscoped(authority, "deleting a policy");
  const id = requireUuid("id", rawId);
  return withConnectErrors(() =>
    db.transaction().execute(async (tx) => {
      if ((await repo.lockPolicy(tx, id, "update")) === undefined) throw notFound(`policy ${id} not found`);
      const policy = (await repo.findPolicy(tx, id))!;
      requireHeldAdminPermissions(authority, describePolicy(policy), policy.permissions);
      const keyIds = await deleteKeysOfPolicy(tx, id);
      if (!(await repo.deletePolicy(tx, id))) throw new ConnectError("policy vanished during delete", Code.Aborted);
      await notifyInvalidation(tx, { kind: "policy", id });
      await hook?.(tx, id);
      return { policy: toPolicyMessage(policy), keysDeleted: keyIds.length };
    }),
  );
}
