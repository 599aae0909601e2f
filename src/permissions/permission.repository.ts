import { type Kysely, type Transaction, sql } from "kysely";
import type { Database, PermissionRow } from "../db/schema.js";

type Db = Kysely<Database> | Transaction<Database>;

/** Every permission, sorted by service then name. */
export function listPermissions(db: Db): Promise<PermissionRow[]> {
  return db.selectFrom("permissions").selectAll().orderBy("service").orderBy("name").execute();
}

/** One service's permissions, sorted by name. */
export function listServicePermissions(db: Db, service: string): Promise<PermissionRow[]> {
  return db.selectFrom("permissions").selectAll().where("service", "=", service).orderBy("name").execute();
}

/** The subset of `names` that no service has declared. */
export async function findUnknownPermissions(db: Db, names: readonly string[]): Promise<string[]> {
  if (names.length === 0) return [];
  const rows = await db.selectFrom("permissions").select("name").where("name", "in", names).execute();
  const known = new Set(rows.map((r) => r.name));
  return names.filter((n) => !known.has(n));
}

/** Inserts or refreshes declared permissions, un-deprecating any that return. */
export async function upsertPermissions(
  db: Db,
  service: string,
  permissions: ReadonlyArray<{ name: string; description: string }>,
): Promise<void> {
  if (permissions.length === 0) return;
  await db
    .insertInto("permissions")
    .values(permissions.map((p) => ({ name: p.name, service, description: p.description })))
    .onConflict((oc) =>
      oc.column("name").doUpdateSet({
        description: (eb) => eb.ref("excluded.description"),
        deprecated: false,
        updated_on: sql<Date>`now()`,
      }).where((eb) =>
        eb.or([
          eb("permissions.deprecated", "=", true),
          eb("permissions.description", "is distinct from", eb.ref("excluded.description")),
        ]),
      ),
    )
    .execute();
}

/** Marks a service's permissions that are not in `keep` as deprecated. */
export async function deprecateOtherPermissions(db: Db, service: string, keep: readonly string[]): Promise<void> {
  let query = db
    .updateTable("permissions")
    .set({ deprecated: true, updated_on: sql<Date>`now()` })
    .where("service", "=", service)
    .where("deprecated", "=", false);
  if (keep.length > 0) query = query.where("name", "not in", keep);
  await query.execute();
}

/** The owner of a namespace: a consumer, or (for keys without one) a policy. */
export type NamespaceOwner = { consumerId: string; policyId?: undefined } | { policyId: string; consumerId?: undefined };

/**
 * Claims `service` for `owner` unless someone owns it already, then returns its
 * owner, row-locked until commit (two first registrations racing: one wins).
 */
export async function claimNamespace(
  tx: Transaction<Database>,
  service: string,
  owner: NamespaceOwner,
  claimedBy: string,
): Promise<NamespaceOwner> {
  await tx
    .insertInto("permission_namespaces")
    .values({
      service,
      owner_consumer_id: owner.consumerId ?? null,
      owner_policy_id: owner.policyId ?? null,
      claimed_by: claimedBy,
    })
    .onConflict((oc) => oc.column("service").doNothing())
    .execute();
  const row = await tx
    .selectFrom("permission_namespaces")
    .select(["owner_consumer_id", "owner_policy_id"])
    .where("service", "=", service)
    .forUpdate()
    .executeTakeFirstOrThrow();
  return row.owner_consumer_id !== null ? { consumerId: row.owner_consumer_id } : { policyId: row.owner_policy_id! };
}
