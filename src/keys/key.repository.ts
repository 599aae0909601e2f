import { type Kysely, type Transaction, sql } from "kysely";
import type { ApiKeyRow, ApiKeyUpdate, Database, NewApiKey } from "../db/schema.js";
import type { KeyRecord } from "../verify/verdict-cache.js";

type Db = Kysely<Database> | Transaction<Database>;

function selectKeyRecords(db: Db) {
  return db
    .selectFrom("api_keys as k")
    .innerJoin("policies as p", "p.id", "k.policy_id")
    .select([
      "k.id",
      "k.name",
      "k.enabled",
      "k.start",
      "k.created_on",
      "k.updated_on",
      "k.last_used_on",
      "k.created_by",
      "p.id as policy_id",
      "p.name as policy_name",
      "p.description as policy_description",
      "p.created_on as policy_created_on",
      "p.updated_on as policy_updated_on",
      "p.created_by as policy_created_by",
      sql<string[]>`coalesce((select array_agg(pp.permission order by pp.permission) from policy_permissions pp where pp.policy_id = p.id), '{}')`.as(
        "permissions",
      ),
    ]);
}

type KeyRecordRow = Awaited<ReturnType<ReturnType<typeof selectKeyRecords>["executeTakeFirstOrThrow"]>>;

function toKeyRecord(row: KeyRecordRow): KeyRecord {
  return {
    id: row.id,
    name: row.name,
    enabled: row.enabled,
    start: row.start,
    createdOn: row.created_on,
    updatedOn: row.updated_on,
    lastUsedOn: row.last_used_on,
    createdBy: row.created_by,
    policy: {
      id: row.policy_id,
      name: row.policy_name,
      description: row.policy_description,
      createdOn: row.policy_created_on,
      updatedOn: row.policy_updated_on,
      createdBy: row.policy_created_by,
      permissions: row.permissions,
    },
  };
}

/**
 * Finds the key a token hash belongs to: its current token, or its previous one
 * while the rotation grace period lasts. `graceEndsOn` is set in the second case.
 */
export async function findKeyRecordByTokenHash(
  db: Db,
  hash: Uint8Array,
): Promise<{ record: KeyRecord; graceEndsOn: Date | null } | undefined> {
  const row = await selectKeyRecords(db)
    .select(sql<Date | null>`case when k.token_hash = ${hash} then null else k.previous_token_expires_on end`.as("grace_ends_on"))
    .where((eb) =>
      eb.or([
        eb("k.token_hash", "=", hash),
        eb.and([eb("k.previous_token_hash", "=", hash), eb("k.previous_token_expires_on", ">", sql<Date>`now()`)]),
      ]),
    )
    .executeTakeFirst();
  return row === undefined ? undefined : { record: toKeyRecord(row), graceEndsOn: row.grace_ends_on };
}

/** One key with its policy, or undefined. */
export async function findKeyRecordById(db: Db, id: string): Promise<KeyRecord | undefined> {
  const row = await selectKeyRecords(db).where("k.id", "=", id).executeTakeFirst();
  return row === undefined ? undefined : toKeyRecord(row);
}

/** A page of keys ordered by (created_on, id), starting after `after`. */
export async function listKeyRecords(
  db: Db,
  options: { limit: number; policyId?: string; after?: { createdOn: Date; id: string } },
): Promise<KeyRecord[]> {
  let query = selectKeyRecords(db).orderBy("k.created_on").orderBy("k.id").limit(options.limit);
  if (options.policyId !== undefined) query = query.where("k.policy_id", "=", options.policyId);
  const after = options.after;
  if (after !== undefined) {
    query = query.where((eb) =>
      eb.or([
        eb("k.created_on", ">", after.createdOn),
        eb.and([eb("k.created_on", "=", after.createdOn), eb("k.id", ">", after.id)]),
      ]),
    );
  }
  return (await query.execute()).map(toKeyRecord);
}

/** Locks a key row for update within a transaction. */
export function lockKey(tx: Transaction<Database>, id: string): Promise<ApiKeyRow | undefined> {
  return tx.selectFrom("api_keys").selectAll().where("id", "=", id).forUpdate().executeTakeFirst();
}

export async function insertKey(db: Db, key: NewApiKey): Promise<string> {
  const row = await db.insertInto("api_keys").values(key).returning("id").executeTakeFirstOrThrow();
  return row.id;
}

export async function updateKey(db: Db, id: string, changes: ApiKeyUpdate): Promise<void> {
  await db.updateTable("api_keys").set({ ...changes, updated_on: sql<Date>`now()` }).where("id", "=", id).execute();
}

export async function deleteKey(db: Db, id: string): Promise<boolean> {
  const result = await db.deleteFrom("api_keys").where("id", "=", id).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

/** Deletes every key of a policy; returns their ids. */
export async function deleteKeysOfPolicy(db: Db, policyId: string): Promise<string[]> {
  const rows = await db.deleteFrom("api_keys").where("policy_id", "=", policyId).returning("id").execute();
  return rows.map((r) => r.id);
}

/** Records last use for many keys in one statement. */
export async function touchKeys(db: Db, lastUsed: ReadonlyMap<string, Date>): Promise<void> {
  if (lastUsed.size === 0) return;
  const values = [...lastUsed].map(([id, at]) => sql`(${id}::uuid, ${at.toISOString()}::timestamptz)`);
  await sql`update api_keys as k set last_used_on = v.at
    from (values ${sql.join(values)}) as v(id, at)
    where k.id = v.id and (k.last_used_on is null or k.last_used_on < v.at)`.execute(db);
}
