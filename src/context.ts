import type { Interceptor } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import { peerContextValues } from "./auth/auth-context.js";
import type { Config } from "./config.js";
import type { DatabaseHandle, PreparedQuery } from "./db/database.js";
import { checkDatabase } from "./db/health-check.js";
import { type Invalidation, parseInvalidation } from "./db/invalidation.js";
import type { Database } from "./db/schema.js";
import type { WriteContext } from "./db/write.js";
import type { ComponentHealth } from "./gen/apikeys/v1/api_keys_pb.js";
import { auditInterceptors } from "./interceptors/audit.js";
import { DataPlane } from "./interceptors/data-plane.js";
import { Metrics } from "./interceptors/metrics.js";
import { SecretBox } from "./jwt/secret-box.js";
import type { TokenSettings } from "./keys/key.service.js";
import { InvalidationBus } from "./streams/invalidation-bus.js";
import { SharedStatus } from "./streams/shared-status.js";
import { StreamCaps } from "./streams/stream-caps.js";
import { UsagePruner } from "./usage/usage-pruner.js";
import { RedisRateLimiter } from "./verify/redis-rate-limiter.js";
import { Verifier } from "./verify/verifier.js";

/** How often the database is re-checked while any Health/Watch stream is open. */
export const HEALTH_WATCH_INTERVAL_MS = 5_000;

/** The limits handlers apply, from config. */
export interface HandlerLimits {
  /** cache_ttl that VerifyToken tells callers. */
  verdictTtlMs: number;
  /** Largest request JSON an audit event stores whole. */
  auditRequestMaxBytes: number;
  maxWatchStreamsPerKey: number;
  maxWatchStreamsPerAddress: number;
  maxHealthWatchStreamsPerAddress: number;
  /** Whether the data-plane RPCs VerifyToken and TestApiKey take the fast path (http/fast-path/). */
  fastPath: boolean;
}

/** Everything a handler may use, built once per server by `createAppContext`. */
export interface AppContext extends WriteContext {
  db: Kysely<Database>;
  databaseKind: "postgres" | "pglite";
  /** Named prepared statements on the pool, for hot queries (Postgres only). */
  prepared: PreparedQuery | undefined;
  logger: Logger;
  /** How tokens are hashed and signing secrets sealed (one SecretBox for the server). */
  tokens: TokenSettings;
  limits: HandlerLimits;
  verifier: Verifier;
  /** Fleet-wide rate limits on Redis (REDIS_URL); undefined: per-instance buckets. */
  globalRateLimiter: RedisRateLimiter | undefined;
  metrics: Metrics;
  /** Relays invalidation events to WatchInvalidations streams. */
  invalidations: InvalidationBus;
  /** Open long-lived streams per key and per address, for their caps. */
  streamCaps: StreamCaps;
  /** Whether the service is healthy (database answers, invalidations live), polled once for all Health/Watch streams. */
  databaseHealth: SharedStatus<boolean>;
  /**
   * The interceptors of each plane, outermost first. Data plane: errors, request
   * log, metrics, failure throttle, auth. The admin plane adds the audit log
   * around auth: its outer half also records calls auth refuses, its inner half
   * knows the actor; a peer the throttle blocks is refused before it, so failing
   * authentication cannot fill the log.
   */
  interceptors: { data: Interceptor[]; admin: Interceptor[]; logged: Interceptor[] };
  /** The data plane's steps, as `interceptors.data` and as a plain function for the fast path. */
  dataPlane: DataPlane;
  /** Context values of a request from a Node server (its peer's address). */
  contextValues: typeof peerContextValues;
  /** Whether the database answers (the `database` health component). */
  checkDatabase(): Promise<ComponentHealth>;
  /** What gRPC health and /readyz call serving: the database answers and invalidations are proven to arrive. */
  serving(): Promise<boolean>;
  /** Applies an invalidation NOTIFY from any instance (this one included). */
  onInvalidation(payload: string): void;
  /** Follows the LISTEN connection's state (see DatabaseHandle.listen). */
  onListenerState(listening: boolean, missedSince?: number): void;
  /** Stops background work and flushes what is batched (last-used times); streams are ended by `invalidations.close()` first. */
  close(): Promise<void>;
}

/** What a test (never the environment) may replace. */
export interface ServerHooks {
  /** The verifier's clock: expiry, credit refills, usage hours. */
  now?: () => number;
}

/** Builds every dependency of the handlers once, from the configuration and an open, migrated database. */
export function createAppContext(config: Config, logger: Logger, database: DatabaseHandle, hooks: ServerHooks = {}): AppContext {
  const secrets = config.signing.secretKey === undefined ? undefined : new SecretBox(config.signing.secretKey);
  const tokens: TokenSettings = { prefix: config.tokens.prefix, pepper: config.tokens.pepper, secrets };
  const globalRateLimiter = config.redis && new RedisRateLimiter(config.redis, logger);
  const pruner = new UsagePruner(database.db, config.usage.retentionMs, logger);
  const verifier = new Verifier(
    database.db,
    {
      tokens,
      cacheMaxEntries: config.cache.maxEntries,
      cacheMaxBytes: config.cache.maxBytes,
      cacheMaxAgeMs: config.cache.maxAgeMs,
      lastUsedFlushMs: config.usage.flushIntervalMs,
      prepared: database.prepared,
      authFailureLimit: config.throttle.authFailureLimit,
      authFailureWindowMs: config.throttle.authFailureWindowMs,
      outageStalenessMs: config.cache.outageStalenessMs,
      signing: { secrets, maxLifetimeMs: config.signing.jwtMaxLifetimeMs, clockSkewMs: config.signing.jwtClockSkewMs },
      globalRateLimiter,
      now: hooks.now,
    },
    logger,
  );
  const metrics = new Metrics({ verifier, poolStats: database.poolStats });
  const invalidations = new InvalidationBus();

  const dataPlane = new DataPlane(verifier, logger, metrics);
  // The admin plane runs the data plane's steps with the audit log's around authentication.
  const [errors, requestLog, measured, throttle, auth] = dataPlane.interceptors as [Interceptor, Interceptor, Interceptor, Interceptor, Interceptor];
  const audit = auditInterceptors(database.db, logger, config.audit.requestMaxBytes);

  const ctx: AppContext = {
    db: database.db,
    databaseKind: database.kind,
    prepared: database.prepared,
    logger,
    tokens,
    limits: {
      verdictTtlMs: config.cache.verdictTtlMs,
      auditRequestMaxBytes: config.audit.requestMaxBytes,
      maxWatchStreamsPerKey: config.http.maxWatchStreamsPerKey,
      maxWatchStreamsPerAddress: config.http.maxWatchStreamsPerAddress,
      maxHealthWatchStreamsPerAddress: config.http.maxHealthWatchStreamsPerAddress,
      fastPath: config.http.fastPath,
    },
    verifier,
    globalRateLimiter,
    metrics,
    invalidations,
    streamCaps: new StreamCaps(),
    databaseHealth: new SharedStatus(() => ctx.serving(), HEALTH_WATCH_INTERVAL_MS),
    interceptors: {
      data: dataPlane.interceptors,
      admin: [errors, requestLog, measured, throttle, audit.outer, auth, audit.inner],
      // Public infrastructure (reflection): logged, never authenticated.
      logged: [errors, requestLog],
    },
    dataPlane,
    contextValues: peerContextValues,
    checkDatabase: () => checkDatabase(ctx.db, database.kind),
    serving: async () => (await ctx.checkDatabase()).healthy && verifier.isListening,
    evict(event: Invalidation) {
      verifier.invalidate(event);
    },
    onInvalidation(payload) {
      metrics.observeInvalidation(payload);
      const event = parseInvalidation(payload);
      if (event) {
        verifier.invalidate(event);
        invalidations.publish(event);
      }
    },
    onListenerState(listening, missedSince) {
      verifier.setListening(listening, missedSince);
      invalidations.setListening(listening);
      logger.info({ listening }, "invalidation listener state");
    },
    async close() {
      pruner.close();
      await verifier.close();
    },
  };
  return ctx;
}
