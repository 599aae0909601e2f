import { type Kysely, type Transaction, sql } from "kysely";
import type { Database, NewPolicy, PolicyRow, PolicyUpdate } from "../db/schema.js";

type Db = Kysely<Database> | Transaction<Database>;

/** A policy row with its sorted permission names. */
export interface PolicyWithPermissions extends PolicyRow {
  permissions: string[];
}

async function attachPermissions(db: Db, policies: PolicyRow[]): Promise<PolicyWithPermissions[]> {
  if (policies.length === 0) return [];
  const rows = await db
    .selectFrom("policy_permissions")
    .select(["policy_id", "permission"])
    .where(
      "policy_id",
      "in",
      policies.map((p) => p.id),
    )
    .orderBy("permission")
    .execute();
  const byPolicy = new Map<string, string[]>();
  for (const row of rows) {
    const list = byPolicy.get(row.policy_id) ?? [];
    list.push(row.permission);
    byPolicy.set(row.policy_id, list);
  }
  return policies.map((p) => ({ ...p, permissions: byPolicy.get(p.id) ?? [] }));
}

export async function listPolicies(db: Db): Promise<PolicyWithPermissions[]> {
  return attachPermissions(db, await db.selectFrom("policies").selectAll().orderBy("name").orderBy("id").execute());
}

export async function findPolicy(db: Db, id: string): Promise<PolicyWithPermissions | undefined> {
  const row = await db.selectFrom("policies").selectAll().where("id", "=", id).executeTakeFirst();
  return row === undefined ? undefined : (await attachPermissions(db, [row]))[0];
}

export async function findPolicyByName(db: Db, name: string): Promise<PolicyWithPermissions | undefined> {
  const row = await db.selectFrom("policies").selectAll().where("name", "=", name).executeTakeFirst();
  return row === undefined ? undefined : (await attachPermissions(db, [row]))[0];
}

/** Locks a policy row (shared: keys may be attached; update: it may change). */
export function lockPolicy(tx: Transaction<Database>, id: string, mode: "share" | "update"): Promise<PolicyRow | undefined> {
  const query = tx.selectFrom("policies").selectAll().where("id", "=", id);
  return (mode === "share" ? query.forShare() : query.forUpdate()).executeTakeFirst();
}

export async function insertPolicy(db: Db, policy: NewPolicy): Promise<string> {
  return (await db.insertInto("policies").values(policy).returning("id").executeTakeFirstOrThrow()).id;
}

export async function updatePolicy(db: Db, id: string, changes: PolicyUpdate): Promise<void> {
  await db.updateTable("policies").set({ ...changes, updated_on: sql<Date>`now()` }).where("id", "=", id).execute();
}

/** Replaces a policy's permission set. */
export async function setPolicyPermissions(db: Db, id: string, permissions: readonly string[]): Promise<void> {
  await db.deleteFrom("policy_permissions").where("policy_id", "=", id).execute();
  if (permissions.length > 0) {
    await db.insertInto("policy_permissions").values(permissions.map((permission) => ({ policy_id: id, permission }))).execute();
  }
}

export async function deletePolicy(db: Db, id: string): Promise<boolean> {
  return (await db.deleteFrom("policies").where("id", "=", id).executeTakeFirst()).numDeletedRows > 0n;
}
