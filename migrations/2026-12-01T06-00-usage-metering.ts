import { type Kysely, sql } from "kysely";

// Frozen once landed: add a new migration instead of editing this one.
export async function up(db: Kysely<any>): Promise<void> {
  // Credits (remaining uses) and their refill; null remaining means unlimited.
  await db.schema
    .alterTable("api_keys")
    .addColumn("remaining", "bigint")
    .addColumn("refill_amount", "bigint")
    // "daily", "monthly" or "period".
    .addColumn("refill_interval", "text")
    .addColumn("refill_period_ms", "bigint")
    .addColumn("refill_day", "smallint")
    .addColumn("refill_anchor", "timestamptz")
    // The boundary the last refill belongs to: a verification past a later boundary refills first.
    .addColumn("refilled_at", "timestamptz")
    .execute();
  await sql`alter table api_keys add constraint api_keys_remaining_check check (remaining >= 0)`.execute(db);

  // Verification outcomes per key per hour, flushed in batches by every instance.
  await db.schema
    .createTable("key_usage")
    .addColumn("key_id", "uuid", (c) => c.notNull().references("api_keys.id").onDelete("cascade"))
    .addColumn("hour", "timestamptz", (c) => c.notNull())
    .addColumn("code", "text", (c) => c.notNull())
    .addColumn("count", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("key_usage_pkey", ["key_id", "hour", "code"])
    .execute();
  // Retention prunes by hour across all keys.
  await db.schema.createIndex("key_usage_hour_idx").on("key_usage").column("hour").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("key_usage").execute();
  await sql`alter table api_keys drop constraint api_keys_remaining_check`.execute(db);
  await db.schema
    .alterTable("api_keys")
    .dropColumn("remaining")
    .dropColumn("refill_amount")
    .dropColumn("refill_interval")
    .dropColumn("refill_period_ms")
    .dropColumn("refill_day")
    .dropColumn("refill_anchor")
    .dropColumn("refilled_at")
    .execute();
}
