import { type Kysely, type Transaction, sql } from "kysely";
import type { Database } from "../db/schema.js";

type Db = Kysely<Database> | Transaction<Database>;

export async function insertSigningSecret(db: Db, keyId: string, ciphertext: Uint8Array): Promise<void> {
  await db.insertInto("signing_secrets").values({ key_id: keyId, ciphertext }).execute();
}

export async function findSigningSecret(db: Db, keyId: string): Promise<Uint8Array | undefined> {
  const row = await db.selectFrom("signing_secrets").select("ciphertext").where("key_id", "=", keyId).executeTakeFirst();
  return row?.ciphertext;
}

/**
 * Records a JWT id until `expiresOn`; false when it is already recorded and not
 * yet expired (a replay). An expired record of the same id is taken over.
 */
export async function recordJti(db: Db, keyId: string, jti: string, expiresOn: Date): Promise<boolean> {
  const row = await db
    .insertInto("used_jtis")
    .values({ key_id: keyId, jti, expires_on: expiresOn })
    .onConflict((oc) =>
      oc
        .columns(["key_id", "jti"])
        .doUpdateSet({ expires_on: expiresOn })
        .where("used_jtis.expires_on", "<=", sql<Date>`now()`),
    )
    .returning("key_id")
    .executeTakeFirst();
  return row !== undefined;
}

/** Forgets JWT ids whose tokens have expired; returns how many. */
export async function pruneJtis(db: Db): Promise<number> {
  const result = await db.deleteFrom("used_jtis").where("expires_on", "<=", sql<Date>`now()`).executeTakeFirst();
  return Number(result.numDeletedRows);
}
