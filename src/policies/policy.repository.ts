import { type Kysely, type RawBuilder, type SqlBool, type Transaction, sql } from "kysely";
import { type Cursor, type Ordering, afterCursor, orderByClause, sortKeySelection } from "../listing/list-query.js";
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

/**
 * A page of policies (p) matching every condition, in `ordering` after `after`
 * (`limit` undefined: all of them), and how many match in all.
 */
export async function listPolicyPage(
  db: Db,
  options: { limit?: number; conditions: readonly RawBuilder<SqlBool>[]; ordering: Ordering<string>; after?: Cursor },
): Promise<{ policies: Array<{ policy: PolicyWithPermissions; cursor: Cursor }>; totalSize: number }> {
  const { conditions, ordering, after } = options;
  const where = conditions.length === 0 ? sql<SqlBool>`true` : sql<SqlBool>`${sql.join(conditions, sql` and `)}`;
  let page = db
    .selectFrom("policies as p")
    .selectAll("p")
    .select(sortKeySelection(ordering.column).as("sort_key"))
    .where(where)
    .orderBy(orderByClause(ordering, sql.ref("p.id")));
  if (options.limit !== undefined) page = page.limit(options.limit);
  if (after !== undefined) page = page.where(afterCursor(ordering, after, sql.ref("p.id")));
  const count = db.selectFrom("policies as p").select(sql<string>`count(*)::text`.as("count")).where(where);
  const [rows, total] = await Promise.all([page.execute(), count.executeTakeFirstOrThrow()]);
  const withPermissions = await attachPermissions(
    db,
    rows.map(({ sort_key: _, ...row }) => row),
  );
  return {
    policies: withPermissions.map((policy, i) => ({ policy, cursor: { value: rows[i]!.sort_key, id: policy.id } })),
    totalSize: Number(total.count),
  };
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
