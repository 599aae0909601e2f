import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import { Kysely, PostgresDialect } from "kysely";
import { PGliteDialect } from "kysely-pglite-dialect";
import pg from "pg";
import type { Logger } from "pino";
import { type DataDirLock, lockDataDir } from "./data-dir-lock.js";
import { ListenerLiveness } from "./listener-liveness.js";
import type { Database } from "./schema.js";

/** Connection pool figures, when the database has a pool. */
export interface PoolStats {
  total: number;
  idle: number;
  waiting: number;
}

/** Channel on which every key/policy write announces what it made stale. */
export const INVALIDATION_CHANNEL = "apikeys_invalidation";

/**
 * Reports the listener's state: `true` once proven to deliver, `false` when lost,
 * with the time (epoch ms) since which events may have been missed.
 */
export type ListenerState = (listening: boolean, missedSince?: number) => void;

/** `application_name` of the LISTEN connection, so operators can find it in pg_stat_activity. */
export const LISTENER_APPLICATION_NAME = "apikeys-listener";

/** A database handle plus the LISTEN side of NOTIFY, for either backend. */
export interface DatabaseHandle {
  db: Kysely<Database>;
  kind: "postgres" | "pglite";
  /**
   * Subscribes to a channel. `onState(true)` fires once listening is proven (again after
   * every reconnect); `onState(false, since)` when the listener is lost and events may
   * have been missed since `since`. Resolves once listening, or once the first attempt failed.
   */
  listen(channel: string, onMessage: (payload: string) => void, onState: ListenerState): Promise<void>;
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
  /** How often the LISTEN connection proves itself alive with a self-NOTIFY (Postgres only; default 5 s). */
  listenerPingIntervalMs?: number;
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
  const pingIntervalMs = options.listenerPingIntervalMs ?? 5_000;
  let stopLiveness: (() => void) | undefined;

  async function connectListener(channel: string, onMessage: (p: string) => void, onState: ListenerState) {
    let attempt = 0;
    // Up to the first echo of a connection, events since the previous connection's last echo may be missing.
    let lastEchoAt: number | undefined;
    // A channel of this process's own, so no instance hears another's pings.
    const pingChannel = `apikeys_listener_${randomBytes(8).toString("hex")}`;
    const connect = async (): Promise<void> => {
      if (closed) return;
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000, application_name: LISTENER_APPLICATION_NAME });
      let live = false;
      let proven: (() => void) | undefined;
      const liveness = new ListenerLiveness(
        pingIntervalMs,
        async (payload) => void (await pool.query("select pg_notify($1, $2)", [pingChannel, payload])),
        () => {
          lastEchoAt = Date.now();
          if (!live) {
            live = true;
            attempt = 0;
            onState(true);
          }
          proven?.();
        },
        (reason) => {
          options.logger.warn({ reason }, "invalidation listener stopped delivering; reconnecting");
          // A connection that stopped delivering may never close by itself: drop it, since `end()` would wait for it.
          client.connection.stream.destroy();
          lost(lastEchoAt);
        },
        (err) => options.logger.warn({ err: err.message }, "invalidation listener could not send its self-NOTIFY"),
      );
      stopLiveness = () => liveness.stop();
      let gone = false;
      const lost = (since?: number) => {
        if (gone) return;
        gone = true;
        liveness.stop();
        proven?.();
        if (listener === client) listener = undefined;
        client.removeAllListeners();
        client.on("error", () => {});
        client.end().catch(() => {});
        if (closed) return;
        // Closed or failed at once: delivery was sound until now. Missed echoes: since the last one.
        onState(false, since ?? Date.now());
        const delay = Math.min(5_000, 100 * 2 ** Math.min(attempt++, 6));
        setTimeout(() => void connect(), delay).unref();
      };
      try {
        client.on("notification", (msg) => {
          if (msg.payload === undefined) return;
          if (msg.channel === channel) onMessage(msg.payload);
          else if (msg.channel === pingChannel) liveness.echo(msg.payload);
        });
        client.on("error", (err) => {
          options.logger.warn({ err: err.message }, "invalidation listener lost its connection");
          lost();
        });
        client.on("end", () => lost());
        await client.connect();
        await client.query(`LISTEN ${channel}`);
        await client.query(`LISTEN ${pingChannel}`);
        listener = client;
        // Listening counts from the first echo: a connection that never delivers is never live.
        const firstEcho = new Promise<void>((resolve) => (proven = resolve));
        liveness.start();
        await firstEcho;
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
      stopLiveness?.();
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
  let lock: DataDirLock | undefined;
  if (!options.dataDir.startsWith("memory://")) {
    mkdirSync(options.dataDir, { recursive: true });
    // PGlite is a single-process database: a second process on the same files would corrupt them.
    lock = lockDataDir(options.dataDir);
  }
  let pglite: PGlite;
  try {
    pglite = await PGlite.create(options.dataDir);
  } catch (err) {
    lock?.release();
    throw err;
  }
  const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
  return {
    db,
    kind: "pglite",
    async listen(channel, onMessage, onState) {
      await pglite.listen(channel, onMessage);
      onState(true);
    },
    async close() {
      try {
        await db.destroy();
      } finally {
        lock?.release();
      }
    },
  };
}
