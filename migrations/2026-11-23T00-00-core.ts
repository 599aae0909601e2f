import { type Kysely, sql } from "kysely";

// Frozen once landed: add a new migration instead of editing this one.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("permissions")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("service", "text", (c) => c.notNull())
    .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("deprecated", "boolean", (c) => c.notNull().defaultTo(false))
    .addColumn("created_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex("permissions_service_idx").on("permissions").column("service").execute();

  await db.schema
    .createTable("policies")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("created_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("created_by", "uuid")
    .addUniqueConstraint("policies_name_key", ["name"])
    .execute();

  await db.schema
    .createTable("policy_permissions")
    .addColumn("policy_id", "uuid", (c) => c.notNull().references("policies.id").onDelete("cascade"))
    .addColumn("permission", "text", (c) => c.notNull().references("permissions.name").onDelete("restrict"))
    .addPrimaryKeyConstraint("policy_permissions_pkey", ["policy_id", "permission"])
    .execute();

  await db.schema
    .createTable("api_keys")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("policy_id", "uuid", (c) => c.notNull().references("policies.id").onDelete("cascade"))
    .addColumn("enabled", "boolean", (c) => c.notNull().defaultTo(true))
    .addColumn("token_hash", "bytea", (c) => c.notNull())
    .addColumn("start", "text", (c) => c.notNull())
    .addColumn("previous_token_hash", "bytea")
    .addColumn("previous_token_expires_on", "timestamptz")
    .addColumn("created_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("last_used_on", "timestamptz")
    .addColumn("created_by", "uuid")
    .addUniqueConstraint("api_keys_name_key", ["name"])
    .addUniqueConstraint("api_keys_token_hash_key", ["token_hash"])
    .execute();
  await db.schema.createIndex("api_keys_policy_id_idx").on("api_keys").column("policy_id").execute();
  await db.schema
    .createIndex("api_keys_previous_token_hash_idx")
    .on("api_keys")
    .column("previous_token_hash")
    .unique()
    .where(sql.ref("previous_token_hash"), "is not", null)
    .execute();
  await db.schema.createIndex("api_keys_created_on_id_idx").on("api_keys").columns(["created_on", "id"]).execute();

  // One row per fact the service records about itself, e.g. that bootstrap ran.
  await db.schema
    .createTable("service_state")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("value", "text", (c) => c.notNull())
    .addColumn("updated_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ["service_state", "api_keys", "policy_permissions", "policies", "permissions"]) {
    await db.schema.dropTable(table).execute();
  }
}
