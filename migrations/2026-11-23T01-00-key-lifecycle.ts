import { type Kysely, sql } from "kysely";

// Frozen once landed: add a new migration instead of editing this one.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("api_keys")
    .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("metadata", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("expires_on", "timestamptz")
    // Existing and new keys admit any origin until an admin narrows them.
    .addColumn("allowed_cidrs", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{0.0.0.0/0,::/0}'::text[]`))
    .addColumn("environment", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("rate_limit_requests", "integer")
    .addColumn("rate_limit_period_ms", "integer")
    .execute();
  await db.schema
    .alterTable("api_keys")
    .addCheckConstraint("api_keys_rate_limit_check", sql`(rate_limit_requests is null) = (rate_limit_period_ms is null)`)
    .execute();

  // Key page tokens carry created_on as an ISO string, which holds milliseconds:
  // with microseconds stored, the last key of a page would sort after its own token.
  await sql`update api_keys set created_on = date_trunc('milliseconds', created_on)`.execute(db);
  await db.schema
    .alterTable("api_keys")
    .alterColumn("created_on", (c) => c.setDefault(sql`date_trunc('milliseconds', now())`))
    .execute();

  // Names of deleted keys and the ids they had, so a key re-created under the
  // same name gets its old id back.
  await db.schema
    .createTable("deleted_api_keys")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("id", "uuid", (c) => c.notNull())
    .addColumn("deleted_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("deleted_api_keys").execute();
  await db.schema.alterTable("api_keys").alterColumn("created_on", (c) => c.setDefault(sql`now()`)).execute();
  await db.schema.alterTable("api_keys").dropConstraint("api_keys_rate_limit_check").execute();
  await db.schema
    .alterTable("api_keys")
    .dropColumn("description")
    .dropColumn("metadata")
    .dropColumn("expires_on")
    .dropColumn("allowed_cidrs")
    .dropColumn("environment")
    .dropColumn("rate_limit_requests")
    .dropColumn("rate_limit_period_ms")
    .execute();
}
