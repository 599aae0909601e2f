import { type Kysely, sql } from "kysely";

// Frozen once landed: add a new migration instead of editing this one.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("consumers")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("username", "text", (c) => c.notNull())
    .addColumn("created_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("created_by", "uuid")
    .addUniqueConstraint("consumers_username_key", ["username"])
    .execute();

  await db.schema
    .createTable("consumer_policies")
    .addColumn("consumer_id", "uuid", (c) => c.notNull().references("consumers.id").onDelete("cascade"))
    .addColumn("policy_id", "uuid", (c) => c.notNull().references("policies.id").onDelete("cascade"))
    .addColumn("created_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("consumer_policies_pkey", ["consumer_id", "policy_id"])
    .execute();
  await db.schema.createIndex("consumer_policies_policy_id_idx").on("consumer_policies").column("policy_id").execute();

  // Restrict, not cascade: deleting a consumer deletes its keys explicitly, so
  // that every deleted key is announced to the verdict caches.
  await db.schema
    .alterTable("api_keys")
    .addColumn("consumer_id", "uuid", (c) => c.references("consumers.id").onDelete("restrict"))
    .addColumn("credential_type", "text", (c) => c.notNull().defaultTo("token"))
    .execute();
  // A signing key has no bearer token: its holder proves possession with JWTs.
  await db.schema.alterTable("api_keys").alterColumn("token_hash", (c) => c.dropNotNull()).execute();
  await db.schema
    .alterTable("api_keys")
    .addCheckConstraint(
      "api_keys_credential_type_check",
      sql`(credential_type = 'token' and token_hash is not null) or (credential_type = 'signing' and token_hash is null)`,
    )
    .execute();
  await db.schema.createIndex("api_keys_consumer_id_idx").on("api_keys").column("consumer_id").execute();

  // AES-256-GCM ciphertext of each signing key's HMAC secret, which must be
  // recoverable to check signatures (a hash would not do).
  await db.schema
    .createTable("signing_secrets")
    .addColumn("key_id", "uuid", (c) => c.primaryKey().references("api_keys.id").onDelete("cascade"))
    .addColumn("ciphertext", "bytea", (c) => c.notNull())
    .addColumn("created_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // JWT ids seen within their token's lifetime, shared by every instance.
  await db.schema
    .createTable("used_jtis")
    .addColumn("key_id", "uuid", (c) => c.notNull())
    .addColumn("jti", "text", (c) => c.notNull())
    .addColumn("expires_on", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("used_jtis_pkey", ["key_id", "jti"])
    .execute();
  await db.schema.createIndex("used_jtis_expires_on_idx").on("used_jtis").column("expires_on").execute();

  await db.schema
    .createTable("audit_events")
    .addColumn("id", "bigint", (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn("call_id", "uuid", (c) => c.notNull())
    // clock_timestamp, not now(): events of one transaction keep their real order in time.
    .addColumn("occurred_on", "timestamptz", (c) => c.notNull().defaultTo(sql`clock_timestamp()`))
    .addColumn("rpc", "text", (c) => c.notNull())
    .addColumn("stage", "text", (c) => c.notNull().check(sql`stage in ('attempt', 'success', 'failure')`))
    .addColumn("actor_key_id", "uuid")
    .addColumn("target_ids", sql`uuid[]`, (c) => c.notNull().defaultTo(sql`'{}'::uuid[]`))
    .addColumn("request", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("code", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("message", "text", (c) => c.notNull().defaultTo(""))
    .execute();
  await db.schema.createIndex("audit_events_occurred_on_idx").on("audit_events").column("occurred_on").execute();
  await db.schema.createIndex("audit_events_actor_key_id_idx").on("audit_events").columns(["actor_key_id", "id"]).execute();
  await db.schema.createIndex("audit_events_target_ids_idx").on("audit_events").using("gin").column("target_ids").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ["audit_events", "used_jtis", "signing_secrets"]) await db.schema.dropTable(table).execute();
  await db.schema.alterTable("api_keys").dropConstraint("api_keys_credential_type_check").execute();
  await db.deleteFrom("api_keys").where("credential_type", "=", "signing").execute();
  await db.schema.alterTable("api_keys").alterColumn("token_hash", (c) => c.setNotNull()).execute();
  await db.schema.alterTable("api_keys").dropColumn("consumer_id").dropColumn("credential_type").execute();
  await db.schema.dropTable("consumer_policies").execute();
  await db.schema.dropTable("consumers").execute();
}
