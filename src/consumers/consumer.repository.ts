import { type Kysely, type RawBuilder, type SqlBool, type Transaction, sql } from "kysely";
import { type Cursor, type Ordering, afterCursor, orderByClause, sortKeySelection } from "../listing/list-query.js";
import type { Database } from "../db/schema.js";
import { isUuid } from "../validation.js";

type Db = Kysely<Database> | Transaction<Database>;

/** A consumer row. */
export interface ConsumerRow {
  id: string;
  username: string;
  created_on: Date;
  created_by: string | null;
}

/** The column a reference names: usernames are never UUID-shaped, so a UUID can only be an id. */
function refColumn(ref: string): ["id" | "username", string] {
  return isUuid(ref) ? ["id", ref.toLowerCase()] : ["username", ref];
}

/** Finds a consumer by id or username. */
export function findConsumer(db: Db, ref: string): Promise<ConsumerRow | undefined> {
  const [column, value] = refColumn(ref);
  return db.selectFrom("consumers").selectAll().where(column, "=", value).executeTakeFirst();
}

/** Locks a consumer (shared: keys may be attached to it; update: it may be deleted). */
export function lockConsumer(tx: Transaction<Database>, ref: string, mode: "share" | "update"): Promise<ConsumerRow | undefined> {
  const [column, value] = refColumn(ref);
  const query = tx.selectFrom("consumers").selectAll().where(column, "=", value);
  return (mode === "share" ? query.forShare() : query.forUpdate()).executeTakeFirst();
}

export async function insertConsumer(db: Db, consumer: { username: string; created_by: string | null }): Promise<ConsumerRow> {
  return db.insertInto("consumers").values(consumer).returningAll().executeTakeFirstOrThrow();
}

/** A page of consumers (c) matching every condition, in `ordering` after `after`, and how many match in all. */
export async function listConsumerPage(
  db: Db,
  options: { limit: number; conditions: readonly RawBuilder<SqlBool>[]; ordering: Ordering<string>; after?: Cursor },
): Promise<{ consumers: Array<{ consumer: ConsumerRow; cursor: Cursor }>; totalSize: number }> {
  const { conditions, ordering, after } = options;
  const where = conditions.length === 0 ? sql<SqlBool>`true` : sql<SqlBool>`${sql.join(conditions, sql` and `)}`;
  let page = db
    .selectFrom("consumers as c")
    .selectAll("c")
    .select(sortKeySelection(ordering.column).as("sort_key"))
    .where(where)
    .orderBy(orderByClause(ordering, sql.ref("c.id")))
    .limit(options.limit);
  if (after !== undefined) page = page.where(afterCursor(ordering, after, sql.ref("c.id")));
  const count = db.selectFrom("consumers as c").select(sql<string>`count(*)::text`.as("count")).where(where);
  const [rows, total] = await Promise.all([page.execute(), count.executeTakeFirstOrThrow()]);
  return {
    consumers: rows.map(({ sort_key, ...consumer }) => ({ consumer, cursor: { value: sort_key, id: consumer.id } })),
    totalSize: Number(total.count),
  };
}

export async function deleteConsumer(db: Db, id: string): Promise<boolean> {
  return (await db.deleteFrom("consumers").where("id", "=", id).executeTakeFirst()).numDeletedRows > 0n;
}

/** The ids of the policies granted to each of the given consumers. */
export async function grantedPolicyIds(db: Db, consumerIds: readonly string[]): Promise<Map<string, string[]>> {
  const byConsumer = new Map<string, string[]>(consumerIds.map((id) => [id, []]));
  if (consumerIds.length === 0) return byConsumer;
  const rows = await db
    .selectFrom("consumer_policies as cp")
    .innerJoin("policies as p", "p.id", "cp.policy_id")
    .select(["cp.consumer_id", "cp.policy_id"])
    .where("cp.consumer_id", "in", consumerIds)
    .orderBy("p.name")
    .execute();
  for (const row of rows) byConsumer.get(row.consumer_id)?.push(row.policy_id);
  return byConsumer;
}

/** Grants policies; already granted ones are left as they are. */
export async function grantPolicies(db: Db, consumerId: string, policyIds: readonly string[]): Promise<void> {
  if (policyIds.length === 0) return;
  await db
    .insertInto("consumer_policies")
    .values(policyIds.map((policy_id) => ({ consumer_id: consumerId, policy_id })))
    .onConflict((oc) => oc.columns(["consumer_id", "policy_id"]).doNothing())
    .execute();
}

/** Withdraws grants; returns the keys of the consumer that still use one of those policies. */
export async function revokePolicies(
  tx: Transaction<Database>,
  consumerId: string,
  policyIds: readonly string[],
): Promise<Array<{ id: string; name: string }>> {
  if (policyIds.length === 0) return [];
  // Delete first: the row locks make a concurrent key creation on these grants
  // either finish before the check below sees its key, or fail to find the grant.
  await tx.deleteFrom("consumer_policies").where("consumer_id", "=", consumerId).where("policy_id", "in", policyIds).execute();
  return tx
    .selectFrom("api_keys")
    .select(["id", "name"])
    .where("consumer_id", "=", consumerId)
    .where("policy_id", "in", policyIds)
    .orderBy("name")
    .execute();
}

/** Whether a policy is granted to a consumer, holding a share lock on the grant until commit. */
export async function lockGrant(tx: Transaction<Database>, consumerId: string, policyId: string): Promise<boolean> {
  const row = await tx
    .selectFrom("consumer_policies")
    .select(sql<number>`1`.as("one"))
    .where("consumer_id", "=", consumerId)
    .where("policy_id", "=", policyId)
    .forShare()
    .executeTakeFirst();
  return row !== undefined;
}
