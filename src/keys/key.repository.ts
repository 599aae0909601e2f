import { type Kysely, type RawBuilder, type SqlBool, type Transaction, sql } from "kysely";
import type { ApiKeyRow, ApiKeyUpdate, Database, NewApiKey } from "../db/schema.js";
import type { PreparedQuery } from "../db/database.js";
import type { KeyRecord } from "./key-record.js";
import { refillFromRow } from "./refill.js";
import { type Cursor, type Ordering, afterCursor, orderByClause, sortKeySelection } from "../listing/list-query.js";

type Db = Kysely<Database> | Transaction<Database>;

function selectKeyRecords(db: Db, options: { permissions: boolean } = { permissions: true }) {
  const permissions = options.permissions
    ? sql<string[]>`coalesce((select array_agg(pp.permission order by pp.permission) from policy_permissions pp where pp.policy_id = p.id), '{}')`
    : sql<string[]>`'{}'::text[]`;
  return db
    .selectFrom("api_keys as k")
    .innerJoin("policies as p", "p.id", "k.policy_id")
    .leftJoin("consumers as c", "c.id", "k.consumer_id")
    .select([
      "k.id",
      "k.name",
      "k.enabled",
      "k.start",
      "k.created_on",
      "k.updated_on",
      "k.last_used_on",
      "k.created_by",
      "k.description",
      "k.metadata",
      "k.expires_on",
      "k.allowed_cidrs",
      "k.environment",
      "k.rate_limit_requests",
      "k.rate_limit_period_ms",
      "k.credential_type",
      "k.remaining",
      "k.refill_amount",
      "k.refill_interval",
      "k.refill_period_ms",
      "k.refill_day",
      "k.refill_anchor",
      "c.id as consumer_id",
      "c.username as consumer_username",
      "p.id as policy_id",
      "p.name as policy_name",
      "p.description as policy_description",
      "p.created_on as policy_created_on",
      "p.updated_on as policy_updated_on",
      "p.created_by as policy_created_by",
      permissions.as("permissions"),
      // The previous token only while it still works.
      sql<string | null>`case when k.previous_token_expires_on > now() then coalesce(k.previous_start, '') end`.as("previous_start"),
      sql<Date | null>`case when k.previous_token_expires_on > now() then k.previous_token_expires_on end`.as(
        "previous_token_expires_on",
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
    description: row.description,
    metadata: row.metadata,
    expiresOn: row.expires_on,
    allowedCidrs: row.allowed_cidrs,
    environment: row.environment,
    rateLimit:
      row.rate_limit_requests !== null && row.rate_limit_period_ms !== null
        ? { requests: row.rate_limit_requests, periodMs: row.rate_limit_period_ms }
        : null,
    credentialType: row.credential_type,
    remaining: row.remaining === null ? null : Number(row.remaining),
    refill: refillFromRow(row),
    previousToken:
      row.previous_start !== null && row.previous_token_expires_on !== null
        ? { start: row.previous_start, expiresOn: row.previous_token_expires_on }
        : null,
    consumer: row.consumer_id !== null && row.consumer_username !== null ? { id: row.consumer_id, username: row.consumer_username } : null,
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

function selectKeyRecordByTokenHash(db: Db, hash: Uint8Array) {
  return selectKeyRecords(db)
    .select(sql<Date | null>`case when k.token_hash = ${hash} then null else k.previous_token_expires_on end`.as("grace_ends_on"))
    .where((eb) =>
      eb.or([
        eb("k.token_hash", "=", hash),
        eb.and([eb("k.previous_token_hash", "=", hash), eb("k.previous_token_expires_on", ">", sql<Date>`now()`)]),
      ]),
    );
}

type TokenHashRow = Awaited<ReturnType<ReturnType<typeof selectKeyRecordByTokenHash>["executeTakeFirstOrThrow"]>>;

// Stands in for the hash when the query is compiled once for a prepared statement.
const HASH_SLOT = new Uint8Array(0);
const compiledByTokenHash = new WeakMap<Db, { sql: string; parameters: readonly unknown[] }>();

/**
 * Finds the key a token hash belongs to: its current token, or its previous one
 * while the rotation grace period lasts. `graceEndsOn` is set in the second case.
 * With `prepared` (Postgres), the same query runs as a named prepared statement,
 * which skips parsing and planning. The verifier uses it when what it reads cannot be cached
 * (cache off, listener down); otherwise keys/key-lookup.ts reads the key's row alone.
 */
export async function findKeyRecordByTokenHash(
  db: Db,
  hash: Uint8Array,
  prepared?: PreparedQuery,
): Promise<{ record: KeyRecord; graceEndsOn: Date | null } | undefined> {
  let row: TokenHashRow | undefined;
  if (prepared === undefined) {
    row = await selectKeyRecordByTokenHash(db, hash).executeTakeFirst();
  } else {
    let compiled = compiledByTokenHash.get(db);
    if (compiled === undefined) {
      compiled = selectKeyRecordByTokenHash(db, HASH_SLOT).compile();
      compiledByTokenHash.set(db, compiled);
    }
    const values = compiled.parameters.map((p) => (p === HASH_SLOT ? hash : p));
    [row] = await prepared<TokenHashRow>("apikeys_key_by_token_hash", compiled.sql, values);
  }
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
  options: { limit: number; policyId?: string; consumerId?: string; after?: { createdOn: Date; id: string } },
): Promise<KeyRecord[]> {
  let query = selectKeyRecords(db).orderBy("k.created_on").orderBy("k.id").limit(options.limit);
  if (options.policyId !== undefined) query = query.where("k.policy_id", "=", options.policyId);
  if (options.consumerId !== undefined) query = query.where("k.consumer_id", "=", options.consumerId);
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

/**
 * One page of keys matching every condition (SQL over k = api_keys alone, so
 * the count needs no join), in `ordering` after `after`, and how many match in
 * all. Without `permissions`, policies come without theirs.
 */
export async function listKeyPage(
  db: Db,
  options: {
    limit: number;
    conditions: readonly RawBuilder<SqlBool>[];
    ordering: Ordering<string>;
    after?: Cursor;
    permissions: boolean;
  },
): Promise<{ records: Array<{ record: KeyRecord; cursor: Cursor }>; totalSize: number }> {
  const { conditions, ordering, after } = options;
  const where = conditions.length === 0 ? sql<SqlBool>`true` : sql<SqlBool>`${sql.join(conditions, sql` and `)}`;
  const count = db.selectFrom("api_keys as k").select(sql<string>`count(*)::text`.as("count")).where(where);
  let page = selectKeyRecords(db, { permissions: options.permissions })
    .select(sortKeySelection(ordering.column).as("sort_key"))
    .where(where)
    .orderBy(orderByClause(ordering, sql.ref("k.id")))
    .limit(options.limit);
  if (after !== undefined) page = page.where(afterCursor(ordering, after, sql.ref("k.id")));
  const [rows, total] = await Promise.all([page.execute(), count.executeTakeFirstOrThrow()]);
  return {
    records: rows.map((row) => ({ record: toKeyRecord(row), cursor: { value: row.sort_key, id: row.id } })),
    totalSize: Number(total.count),
  };
}

/** How many keys each of these policies or consumers has, by id (absent ids have none). */
export async function countKeysBy(db: Db, column: "policy_id" | "consumer_id", ids: readonly string[]): Promise<Record<string, number>> {
  if (ids.length === 0) return {};
  const rows = await db
    .selectFrom("api_keys")
    .select([`${column} as id`, sql<string>`count(*)::text`.as("count")])
    .where(column, "in", [...ids])
    .groupBy(column)
    .execute();
  return Object.fromEntries(ids.map((id) => [id, Number(rows.find((r) => r.id === id)?.count ?? 0)]));
}

/** Locks the key a token identifies (current, or previous within its grace) and returns its id. */
export async function lockKeyByTokenHash(tx: Transaction<Database>, hash: Uint8Array): Promise<string | undefined> {
  const row = await tx
    .selectFrom("api_keys")
    .select("id")
    .where((eb) =>
      eb.or([
        eb("token_hash", "=", hash),
        eb.and([eb("previous_token_hash", "=", hash), eb("previous_token_expires_on", ">", sql<Date>`now()`)]),
      ]),
    )
    .forUpdate()
    .executeTakeFirst();
  return row?.id;
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

/**
 * Remembers which id each deleted key's name had, so a key created later under
 * that name gets the id back. Every key deletion must go through here.
 */
export async function recordDeletedKeys(db: Db, keys: ReadonlyArray<{ id: string; name: string }>): Promise<void> {
  if (keys.length === 0) return;
  await db
    .insertInto("deleted_api_keys")
    .values(keys.map((k) => ({ name: k.name, id: k.id })))
    .onConflict((oc) => oc.column("name").doUpdateSet((eb) => ({ id: eb.ref("excluded.id"), deleted_on: sql<Date>`now()` })))
    .execute();
}

/** Takes (and forgets) the id a deleted key of this name had, locking the record; undefined if none. */
export async function takeDeletedKeyId(tx: Transaction<Database>, name: string): Promise<string | undefined> {
  const row = await tx.deleteFrom("deleted_api_keys").where("name", "=", name).returning("id").executeTakeFirst();
  return row?.id;
}

export async function deleteKey(db: Db, id: string): Promise<boolean> {
  const rows = await db.deleteFrom("api_keys").where("id", "=", id).returning(["id", "name"]).execute();
  await recordDeletedKeys(db, rows);
  return rows.length > 0;
}

/** Deletes every key of a consumer; returns their ids. */
export async function deleteKeysOfConsumer(db: Db, consumerId: string): Promise<string[]> {
  const rows = await db.deleteFrom("api_keys").where("consumer_id", "=", consumerId).returning(["id", "name"]).execute();
  await recordDeletedKeys(db, rows);
  return rows.map((r) => r.id);
}

/** Deletes every key of a policy; returns their ids. */
export async function deleteKeysOfPolicy(db: Db, policyId: string): Promise<string[]> {
  const rows = await db.deleteFrom("api_keys").where("policy_id", "=", policyId).returning(["id", "name"]).execute();
  await recordDeletedKeys(db, rows);
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
