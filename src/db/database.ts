import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import { Kysely, PostgresDialect } from "kysely";
import { PGliteDialect } from "kysely-pglite-dialect";
import pg from "pg";
import type { Logger } from "pino";
import type { PoolStats } from "../metrics.js";
import type { Database } from "./schema.js";

/** Channel on which every key/policy write announces what it made stale. */
export const INVALIDATION_CHANNEL = "apikeys_invalidation";

/** A database handle plus the LISTEN side of NOTIFY, for either backend. */
export interface DatabaseHandle {
  db: Kysely<Database>;
  kind: "postgres" | "pglite";
  /**
   * Subscribes to a channel. `onState(true)` fires once listening (again after every
   * reconnect); `onState(false)` when the listener is lost and events may be missed.
   */
  listen(channel: string, onMessage: (payload: string) => void, onState: (listening: boolean) => void): Promise<void>;
  close(): Promise<void>;
  /** Connection pool figures (Postgres only). */
  poolStats?: () => PoolStats;
  /** Runs a named prepared statement straight on the pool (Postgres only), for hot queries. */
  prepared?: PreparedQuery;
}

/**
 * Executes `text` as the named prepared statement `name`: each pooled connection
 * parses and plans it once, then only binds values.
 */
export type PreparedQuery = <R>(name: string, text: string, values: readonly unknown[]) => Promise<R[]>;

export interface DatabaseOptions {
  databaseUrl: string | undefined;
  dataDir: string;
  poolSize: number;
  /** Postgres statement_timeout of every pooled connection, in ms; 0 disables. PGlite has none. */
  statementTimeoutMs: number;
  logger: Logger;
}

/** Opens Postgres when a URL is given, else an embedded PGlite database on disk. */
export async function openDatabase(options: DatabaseOptions): Promise<DatabaseHandle> {
  return options.databaseUrl === undefined ? openPglite(options) : openPostgres(options.databaseUrl, options);
}

// Keep timestamps as Date and bigints as numbers we can reason about.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

async function openPostgres(url: string, options: DatabaseOptions): Promise<DatabaseHandle> {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize,
    connectionTimeoutMillis: 5_000,
    // Sent as a startup parameter: a statement stuck on a lock or a slow plan fails instead of holding its request.
    statement_timeout: options.statementTimeoutMs,
  });
  // An idle client that loses its connection emits here; without a listener it would crash the process.
  pool.on("error", (err) => options.logger.warn({ err: err.message }, "idle database connection failed"));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  let closed = false;
  let listener: pg.Client | undefined;

  async function connectListener(channel: string, onMessage: (p: string) => void, onState: (l: boolean) => void) {
    let attempt = 0;
    const connect = async (): Promise<void> => {
      if (closed) return;
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
      const lost = () => {
        if (listener === client) listener = undefined;
        client.removeAllListeners();
        client.on("error", () => {});
        client.end().catch(() => {});
        if (closed) return;
        onState(false);
        const delay = Math.min(5_000, 100 * 2 ** Math.min(attempt++, 6));
        setTimeout(() => void connect(), delay).unref();
      };
      try {
        client.on("notification", (msg) => {
          if (msg.channel === channel && msg.payload !== undefined) onMessage(msg.payload);
        });
        client.on("error", (err) => {
          options.logger.warn({ err: err.message }, "invalidation listener lost its connection");
          lost();
        });
        client.on("end", () => lost());
        await client.connect();
        await client.query(`LISTEN ${channel}`);
        listener = client;
        attempt = 0;
        onState(true);
      } catch (err) {
        options.logger.warn({ err: (err as Error).message }, "invalidation listener could not connect");
        lost();
      }
    };
    await connect();
  }

  return {
    db,
    kind: "postgres",
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    async prepared<R>(name: string, text: string, values: readonly unknown[]) {
      return (await pool.query({ name, text, values: [...values] })).rows as R[];
    },
    async listen(channel, onMessage, onState) {
      await connectListener(channel, onMessage, onState);
    },
    async close() {
      closed = true;
      const client = listener;
      listener = undefined;
      if (client) {
        client.removeAllListeners();
        client.on("error", () => {});
        await client.end().catch(() => {});
      }
      await db.destroy();
    },
  };
}

async function openPglite(options: DatabaseOptions): Promise<DatabaseHandle> {
  if (!options.dataDir.startsWith("memory://")) mkdirSync(options.dataDir, { recursive: true });
  const pglite = await PGlite.create(options.dataDir);
  const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
  return {
    db,
    kind: "pglite",
    async listen(channel, onMessage, onState) {
      await pglite.listen(channel, onMessage);
      onState(true);
    },
    async close() {
      await db.destroy();
    },
  };
}
