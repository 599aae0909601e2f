import { randomBytes } from "node:crypto";
import pg from "pg";

/** True when the suite runs against real Postgres (DATABASE_URL set). */
export const usingPostgres = Boolean(process.env.DATABASE_URL);

/** A database of its own for one test file: a fresh Postgres database, or in-memory PGlite. */
export interface TestDatabase {
  /** Connection string, or undefined for PGlite. */
  url: string | undefined;
  drop(): Promise<void>;
}

/** Creates an isolated database; on Postgres it is dropped (with its connections) by `drop`. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const base = process.env.DATABASE_URL;
  if (!base) return { url: undefined, drop: async () => {} };
  const name = `apikeys_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: base });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}
