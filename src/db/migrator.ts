import { type Kysely, type Migration, type MigrationProvider, Migrator } from "kysely";
import * as core from "../../migrations/2026-11-23T00-00-core.js";
import * as keyLifecycle from "../../migrations/2026-11-23T01-00-key-lifecycle.js";
import * as consumersAudit from "../../migrations/2026-11-23T02-00-consumers-audit.js";
import * as namespaceOwners from "../../migrations/2026-12-01T01-00-namespace-owners.js";
import * as listIndexes from "../../migrations/2026-12-01T04-00-list-indexes.js";
import * as usageMetering from "../../migrations/2026-12-01T06-00-usage-metering.js";
import type { Database } from "./schema.js";

// A static index, so the same migrations run from source and from a bundle.
const migrations: Record<string, Migration> = {
  "2026-11-23T00-00-core": core,
  "2026-11-23T01-00-key-lifecycle": keyLifecycle,
  "2026-11-23T02-00-consumers-audit": consumersAudit,
  "2026-12-01T01-00-namespace-owners": namespaceOwners,
  "2026-12-01T04-00-list-indexes": listIndexes,
  "2026-12-01T06-00-usage-metering": usageMetering,
};

class StaticMigrationProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  }
}

/** Brings the schema up to date; returns the names of the migrations it applied. */
export async function migrateToLatest(db: Kysely<Database>): Promise<string[]> {
  const migrator = new Migrator({ db, provider: new StaticMigrationProvider() });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}
