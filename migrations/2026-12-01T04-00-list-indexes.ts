import type { Kysely } from "kysely";

// Frozen once landed: add a new migration instead of editing this one.
export async function up(db: Kysely<any>): Promise<void> {
  // The display prefix of the token a rotation replaced, shown while its grace period lasts.
  await db.schema.alterTable("api_keys").addColumn("previous_start", "text").execute();

  // Key lists sorted by last use or expiry page through these (nulls sort last in both).
  await db.schema.createIndex("api_keys_last_used_on_id_idx").on("api_keys").columns(["last_used_on", "id"]).execute();
  await db.schema.createIndex("api_keys_expires_on_id_idx").on("api_keys").columns(["expires_on", "id"]).execute();

  // The one-event-per-call audit view looks up each outcome's attempt by call id,
  // and the write/read and method filters walk the log by method.
  await db.schema.createIndex("audit_events_call_id_idx").on("audit_events").column("call_id").execute();
  await db.schema.createIndex("audit_events_rpc_id_idx").on("audit_events").columns(["rpc", "id"]).execute();
  // Policies listed by creation time.
  await db.schema.createIndex("policies_created_on_id_idx").on("policies").columns(["created_on", "id"]).execute();
  await db.schema.createIndex("consumers_created_on_id_idx").on("consumers").columns(["created_on", "id"]).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const index of [
    "consumers_created_on_id_idx",
    "policies_created_on_id_idx",
    "audit_events_rpc_id_idx",
    "audit_events_call_id_idx",
    "api_keys_expires_on_id_idx",
    "api_keys_last_used_on_id_idx",
  ]) {
    await db.schema.dropIndex(index).execute();
  }
  await db.schema.alterTable("api_keys").dropColumn("previous_start").execute();
}
