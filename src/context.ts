import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { Config } from "./config.js";
import type { PreparedQuery } from "./db/database.js";
import type { Database } from "./db/schema.js";
import type { InvalidationBus } from "./invalidation/invalidation-bus.js";
import type { SharedStatus } from "./streams/shared-status.js";
import type { StreamCaps } from "./streams/stream-caps.js";
import type { Verifier } from "./verify/verifier.js";

/** What every handler may use. */
export interface AppContext {
  config: Config;
  db: Kysely<Database>;
  databaseKind: "postgres" | "pglite";
  /** Named prepared statements on the pool, for hot queries (Postgres only). */
  prepared: PreparedQuery | undefined;
  logger: Logger;
  verifier: Verifier;
  /** Relays invalidation events to WatchInvalidations streams. */
  invalidations: InvalidationBus;
  /** Open long-lived streams per key and per address, for their caps. */
  streamCaps: StreamCaps;
  /** Whether the database answers, polled once for all Health/Watch streams. */
  databaseHealth: SharedStatus<boolean>;
}
