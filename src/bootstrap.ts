import { sql, type Kysely } from "kysely";
import { SERVER_AUTHORITY } from "./auth/authority.js";
import type { Database } from "./db/schema.js";
import { type WriteContext, write } from "./db/write.js";
import { createKey, type TokenSettings } from "./keys/key.service.js";
import { listServicePermissions } from "./permissions/permission.repository.js";
import { OWN_SERVICE } from "./permissions/permission.service.js";
import { createPolicy } from "./policies/policy.service.js";
import { findPolicyByName } from "./policies/policy.repository.js";
import { generateToken } from "./tokens/token.js";

export const ADMIN_POLICY_NAME = "apikeys-admin";
export const BOOTSTRAP_KEY_NAME = "bootstrap";
const BOOTSTRAPPED = "bootstrapped_on";
// Arbitrary constant: serialises bootstrap across instances starting together.
const BOOTSTRAP_LOCK = 4_201_127;

/**
 * On a database that was never bootstrapped, creates the admin policy (every
 * `apikeys:` permission) and a bootstrap key. Returns its token (and whether it
 * was generated here rather than taken from config), or undefined when done before.
 * Runs on one connection holding an advisory lock, so concurrent instances bootstrap once.
 */
export async function bootstrap(
  db: Kysely<Database>,
  tokens: TokenSettings,
  bootstrapToken: string | undefined,
): Promise<{ token: string; generated: boolean } | undefined> {
  return db.connection().execute(async (conn) => {
    await sql`select pg_advisory_lock(${BOOTSTRAP_LOCK})`.execute(conn);
    try {
      const done = await conn.selectFrom("service_state").select("value").where("key", "=", BOOTSTRAPPED).executeTakeFirst();
      if (done !== undefined) return undefined;
      const permissions = (await listServicePermissions(conn, OWN_SERVICE)).filter((p) => !p.deprecated).map((p) => p.name);
      const policy =
        (await findPolicyByName(conn, ADMIN_POLICY_NAME)) ??
        (await write(startup(conn), undefined, (w) =>
          createPolicy(w, SERVER_AUTHORITY, {
            name: ADMIN_POLICY_NAME,
            description: "Full access to the apikeys admin and data planes.",
            permissions,
          }),
        ));
      const token = bootstrapToken ?? generateToken(tokens.prefix);
      await write(startup(conn), undefined, (w) =>
        createKey(w, tokens, SERVER_AUTHORITY, { name: BOOTSTRAP_KEY_NAME, policyId: policy.id, token }),
      );
      await conn.insertInto("service_state").values({ key: BOOTSTRAPPED, value: new Date().toISOString() }).execute();
      return { token, generated: bootstrapToken === undefined };
    } finally {
      await sql`select pg_advisory_unlock(${BOOTSTRAP_LOCK})`.execute(conn);
    }
  });
}

/**
 * Gives the built-in admin policy every current `apikeys:` permission it lacks,
 * so a database bootstrapped by an older version gains permissions added since
 * (e.g. `apikeys:leaks.report`). Runs on every start; returns what it added.
 */
export async function grantOwnPermissionsToAdminPolicy(db: Kysely<Database>): Promise<string[]> {
  return write(startup(db), undefined, async ({ tx, invalidate }) => {
    const policy = await findPolicyByName(tx, ADMIN_POLICY_NAME);
    if (policy === undefined) return [];
    const added = await tx
      .insertInto("policy_permissions")
      .columns(["policy_id", "permission"])
      .expression((eb) =>
        eb
          .selectFrom("permissions")
          .select([sql<string>`${policy.id}::uuid`.as("policy_id"), "name"])
          .where("service", "=", OWN_SERVICE)
          .where("deprecated", "=", false),
      )
      .onConflict((oc) => oc.doNothing())
      .returning("permission")
      .execute();
    if (added.length > 0) await invalidate({ kind: "policy", id: policy.id });
    return added.map((row) => row.permission).sort();
  });
}

/** Start-up writes run before any verifier exists: nothing of this instance is cached yet. */
function startup(db: Kysely<Database>): WriteContext {
  return { db, evict: () => {} };
}
