import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { Database } from "../db/schema.js";

/** Where the embedded database keeps its generated APIKEYS_SECRET_KEY. */
export const SECRET_KEY_FILE = "secret-key";

/** A start-up refusal that tells the operator what to set. */
export class SecretKeyError extends Error {}

export interface SecretKeySettings {
  /** APIKEYS_SECRET_KEY, if set. */
  configured: string | undefined;
  /** Undefined for the embedded database. */
  databaseUrl: string | undefined;
  dataDir: string;
}

/**
 * The server secret that seals signing-key secrets. APIKEYS_SECRET_KEY wins. The
 * embedded database, which lives in one data directory on one machine, gets a
 * 256-bit key generated once into that directory (or, for `memory://`, into memory,
 * where the database lives too), so signing keys work out of the box. With
 * DATABASE_URL there is no place of our own to keep one: a missing key is an error
 * only once signing keys exist, since none of them could be verified.
 */
export async function resolveSecretKey(db: Kysely<Database>, settings: SecretKeySettings, logger: Logger): Promise<string | undefined> {
  if (settings.configured !== undefined) return settings.configured;
  if (settings.databaseUrl === undefined && settings.dataDir.startsWith("memory://")) return generateSecretKey();
  const path = settings.databaseUrl === undefined ? join(settings.dataDir, SECRET_KEY_FILE) : undefined;
  const stored = path === undefined ? undefined : readSecretKey(path);
  if (stored !== undefined) return stored;
  const signingKeys = await countSigningKeys(db);
  if (signingKeys > 0) {
    const where = path === undefined ? "" : ` (and ${path} is missing)`;
    throw new SecretKeyError(
      `${signingKeys} signing key(s) exist but APIKEYS_SECRET_KEY is not set${where}: set APIKEYS_SECRET_KEY to the value ` +
        "they were created with (the same on every instance); without it none of them can be verified",
    );
  }
  if (path === undefined) return undefined;
  const key = generateSecretKey();
  // "wx": never overwrite a key another process wrote first; 0600: only this user reads it.
  writeFileSync(path, `${key}\n`, { mode: 0o600, flag: "wx" });
  logger.warn({ path }, "APIKEYS_SECRET_KEY generated; set APIKEYS_SECRET_KEY in production");
  return key;
}

function generateSecretKey(): string {
  return randomBytes(32).toString("base64url");
}

function readSecretKey(path: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const key = text.trim();
  if (key.length < 32) throw new SecretKeyError(`${path} holds no valid secret key (at least 32 characters); restore it or set APIKEYS_SECRET_KEY`);
  return key;
}

async function countSigningKeys(db: Kysely<Database>): Promise<number> {
  const row = await db.selectFrom("signing_secrets").select((eb) => eb.fn.countAll<string>().as("n")).executeTakeFirstOrThrow();
  return Number(row.n);
}
