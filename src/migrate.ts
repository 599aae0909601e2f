import { ConfigError, readConfig } from "./config.js";
import { openDatabase } from "./db/database.js";
import { migrateToLatest } from "./db/migrator.js";
import { createLogger } from "./logger.js";

try {
  const config = readConfig();
  const logger = createLogger(config.logLevel);
  const database = await openDatabase({
    databaseUrl: config.database.url,
    dataDir: config.database.dataDir,
    poolSize: 1,
    // `npm run migrate` is the way to run a long migration: no statement timeout.
    statementTimeoutMs: 0,
    logger,
  });
  try {
    const applied = await migrateToLatest(database.db);
    process.stdout.write(applied.length > 0 ? `applied: ${applied.join(", ")}\n` : "database is up to date\n");
  } finally {
    await database.close();
  }
} catch (err) {
  const prefix = err instanceof ConfigError ? "configuration error" : "migration failed";
  process.stderr.write(`apikeys: ${prefix}: ${(err as Error).message}\n`);
  process.exit(err instanceof ConfigError ? 2 : 1);
}
