import { type Kysely, sql } from "kysely";

// Frozen once landed: add a new migration instead of editing this one.
export async function up(db: Kysely<any>): Promise<void> {
  // Who may (re-)register each permission namespace: the consumer of the key that
  // first registered it, or its policy when the key had no consumer. Namespaces
  // registered before this migration have no row: the next registration claims them.
  // Deleting the owner releases the namespace (cascade).
  await db.schema
    .createTable("permission_namespaces")
    .addColumn("service", "text", (c) => c.primaryKey())
    .addColumn("owner_consumer_id", "uuid", (c) => c.references("consumers.id").onDelete("cascade"))
    .addColumn("owner_policy_id", "uuid", (c) => c.references("policies.id").onDelete("cascade"))
    .addColumn("claimed_by", "uuid", (c) => c.notNull())
    .addColumn("claimed_on", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint("permission_namespaces_one_owner", sql`num_nonnulls(owner_consumer_id, owner_policy_id) = 1`)
    .execute();
  await db.schema
    .createIndex("permission_namespaces_owner_consumer_id_idx")
    .on("permission_namespaces")
    .column("owner_consumer_id")
    .execute();
  await db.schema
    .createIndex("permission_namespaces_owner_policy_id_idx")
    .on("permission_namespaces")
    .column("owner_policy_id")
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("permission_namespaces").execute();
}
