import { resolve } from "node:path";
import { parseToken } from "./tokens/token.js";

/** Timeouts and caps that keep slow or idle clients from holding connections (docs/operations.md). */
export interface ConnectionLimits {
  /** A new connection must send enough bytes to tell HTTP/1.1 from HTTP/2 within this. */
  sniffTimeoutMs: number;
  /** HTTP/1.1: a request's headers must be complete within this of its first byte (or of the connection). */
  headersTimeoutMs: number;
  /** A request (headers and body) must be received completely within this; 0 disables. */
  requestTimeoutMs: number;
  /** HTTP/1.1: a keep-alive connection with no request for this long is closed. */
  keepAliveTimeoutMs: number;
  /** HTTP/2: a session with no open stream for this long is closed. */
  h2IdleTimeoutMs: number;
  /** Open connections allowed from one remote address; 0 disables the cap. */
  maxConnectionsPerAddress: number;
}

/** Typed, validated service configuration, one section per part of the server (docs/configuration.md). */
export interface Config {
  logLevel: string;
  http: {
    port: number;
    host: string | undefined;
    /** When set, the admin service is served only on this port. */
    adminPort: number | undefined;
    adminHost: string;
    shutdownGraceMs: number;
    /** Connection timeouts and caps of every listener. */
    limits: ConnectionLimits;
    /** Open WatchInvalidations streams allowed per API key and per remote address. */
    maxWatchStreamsPerKey: number;
    maxWatchStreamsPerAddress: number;
    /** Open grpc.health.v1 Health/Watch streams allowed per remote address. */
    maxHealthWatchStreamsPerAddress: number;
    /** Whether VerifyToken and TestApiKey are answered by the fast path in front of connect (APIKEYS_FAST_PATH). */
    fastPath: boolean;
  };
  database: {
    /** Postgres connection string; undefined selects embedded PGlite. */
    url: string | undefined;
    poolSize: number;
    /** PGlite data directory, or "memory://" for a throwaway database. */
    dataDir: string;
    /** Postgres statement_timeout on every pooled connection; 0 disables. */
    statementTimeoutMs: number;
    /** How often the LISTEN connection proves itself with a self-NOTIFY; an echo missing this long marks it down. */
    listenerPingIntervalMs: number;
  };
  tokens: {
    prefix: string;
    /** Server secret mixed into token hashes (HMAC-SHA256) when set. */
    pepper: string | undefined;
    bootstrapToken: string | undefined;
  };
  cache: {
    maxEntries: number;
    /** Approximate memory the verdict cache may hold, in bytes. */
    maxBytes: number;
    /** Longest time a cached verdict is trusted without an invalidation. */
    maxAgeMs: number;
    /** cache_ttl that VerifyToken tells callers. */
    verdictTtlMs: number;
    /** How long cached keys keep answering after the database connection is lost; 0 refuses at once. */
    outageStalenessMs: number;
  };
  throttle: {
    /** Failed authentications allowed per client address per window; 0 disables throttling. */
    authFailureLimit: number;
    authFailureWindowMs: number;
  };
  signing: {
    /** Server secret that encrypts signing keys' secrets at rest; unset, the embedded database generates one (see jwt/server-secret-key). */
    secretKey: string | undefined;
    /** Longest lifetime (exp - iat) of a JWT signed with a signing key. */
    jwtMaxLifetimeMs: number;
    /** Clock difference tolerated on a JWT's iat and exp. */
    jwtClockSkewMs: number;
  };
  audit: {
    /** Largest request JSON an audit event stores whole (UTF-8 bytes); larger ones are stored truncated. */
    requestMaxBytes: number;
  };
  /** Fleet-wide rate limits on Redis when set; per-instance buckets otherwise. */
  redis: RedisConfig | undefined;
  usage: {
    /** How long hourly usage counts are kept. */
    retentionMs: number;
    /** How often usage counts and last-used times are written (and idle rate-limit and throttle entries swept). */
    flushIntervalMs: number;
  };
}

/** Where and how rate limits reach Redis. */
export interface RedisConfig {
  url: string;
  /** Prefix of every Redis key written, so deployments can share one Redis. */
  keyPrefix: string;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

/** A configuration error, reported as one line before the process exits. */
export class ConfigError extends Error {}

type Env = Record<string, string | undefined>;

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  return value;
}

function optionalPort(env: Env, name: string): number | undefined {
  return env[name] === undefined || env[name] === "" ? undefined : integer(env, name, 0, 0, 65535);
}

/** Reads and validates the configuration from environment variables. */
export function readConfig(env: Env = process.env): Config {
  const tokenPrefix = env.APIKEYS_TOKEN_PREFIX || "ak";
  if (!/^[a-z][a-z0-9]{0,15}$/.test(tokenPrefix)) {
    throw new ConfigError(`APIKEYS_TOKEN_PREFIX must match [a-z][a-z0-9]{0,15}, got "${tokenPrefix}"`);
  }
  const bootstrapToken = env.APIKEYS_BOOTSTRAP_TOKEN || undefined;
  if (bootstrapToken !== undefined && parseToken(bootstrapToken, tokenPrefix) === undefined) {
    throw new ConfigError(
      `APIKEYS_BOOTSTRAP_TOKEN is not a well-formed "${tokenPrefix}_" token; generate one with "npm run token"`,
    );
  }
  const databaseUrl = env.DATABASE_URL || undefined;
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError(`DATABASE_URL must start with postgres:// or postgresql://`);
  }
  const logLevel = env.LOG_LEVEL || "info";
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got "${logLevel}"`);
  }
  const pepper = env.APIKEYS_TOKEN_PEPPER || undefined;
  if (pepper !== undefined && pepper.length < 32) {
    throw new ConfigError("APIKEYS_TOKEN_PEPPER must be at least 32 characters");
  }
  const secretKey = env.APIKEYS_SECRET_KEY || undefined;
  if (secretKey !== undefined && secretKey.length < 32) {
    throw new ConfigError("APIKEYS_SECRET_KEY must be at least 32 characters");
  }
  const port = integer(env, "PORT", 5000, 0, 65535);
  const adminPort = optionalPort(env, "ADMIN_PORT");
  if (adminPort !== undefined && adminPort !== 0 && adminPort === port) {
    throw new ConfigError("ADMIN_PORT must differ from PORT");
  }
  const dataDir = env.APIKEYS_DATA_DIR || "./data";
  const headersTimeoutMs = integer(env, "APIKEYS_HEADERS_TIMEOUT_SECONDS", 15, 1, 3600) * 1000;
  const requestTimeoutMs = integer(env, "APIKEYS_REQUEST_TIMEOUT_SECONDS", 60, 0, 3600) * 1000;
  if (requestTimeoutMs > 0 && requestTimeoutMs < headersTimeoutMs) {
    throw new ConfigError("APIKEYS_REQUEST_TIMEOUT_SECONDS must be 0 or at least APIKEYS_HEADERS_TIMEOUT_SECONDS");
  }
  const redisUrl = env.REDIS_URL || undefined;
  if (redisUrl !== undefined && !/^rediss?:\/\//.test(redisUrl)) {
    throw new ConfigError("REDIS_URL must start with redis:// or rediss://");
  }
  const redis =
    redisUrl === undefined
      ? undefined
      : {
          url: redisUrl,
          keyPrefix: env.APIKEYS_REDIS_KEY_PREFIX ?? "apikeys:",
          connectTimeoutMs: integer(env, "APIKEYS_REDIS_CONNECT_TIMEOUT_MS", 2_000, 10, 60_000),
          commandTimeoutMs: integer(env, "APIKEYS_REDIS_COMMAND_TIMEOUT_MS", 500, 10, 60_000),
        };
  return {
    logLevel,
    http: {
      port,
      host: env.HOST || undefined,
      adminPort,
      adminHost: env.ADMIN_HOST || "127.0.0.1",
      shutdownGraceMs: integer(env, "APIKEYS_SHUTDOWN_GRACE_SECONDS", 10, 0, 600) * 1000,
      limits: {
        sniffTimeoutMs: integer(env, "APIKEYS_SNIFF_TIMEOUT_SECONDS", 10, 1, 3600) * 1000,
        headersTimeoutMs,
        requestTimeoutMs,
        keepAliveTimeoutMs: integer(env, "APIKEYS_KEEPALIVE_TIMEOUT_SECONDS", 65, 1, 3600) * 1000,
        h2IdleTimeoutMs: integer(env, "APIKEYS_H2_IDLE_TIMEOUT_SECONDS", 300, 1, 86_400) * 1000,
        maxConnectionsPerAddress: integer(env, "APIKEYS_MAX_CONNECTIONS_PER_ADDRESS", 256, 0, 1_000_000),
      },
      maxWatchStreamsPerKey: integer(env, "APIKEYS_MAX_WATCH_STREAMS_PER_KEY", 128, 1, 1_000_000),
      maxWatchStreamsPerAddress: integer(env, "APIKEYS_MAX_WATCH_STREAMS_PER_ADDRESS", 16, 1, 1_000_000),
      maxHealthWatchStreamsPerAddress: integer(env, "APIKEYS_MAX_HEALTH_WATCH_STREAMS_PER_ADDRESS", 16, 1, 1_000_000),
      fastPath: integer(env, "APIKEYS_FAST_PATH", 1, 0, 1) === 1,
    },
    database: {
      url: databaseUrl,
      poolSize: integer(env, "DATABASE_POOL_SIZE", 10, 1, 1000),
      dataDir: dataDir.startsWith("memory://") ? dataDir : resolve(dataDir),
      statementTimeoutMs: integer(env, "APIKEYS_STATEMENT_TIMEOUT_SECONDS", 10, 0, 3600) * 1000,
      listenerPingIntervalMs: integer(env, "APIKEYS_LISTENER_PING_SECONDS", 5, 1, 600) * 1000,
    },
    tokens: { prefix: tokenPrefix, pepper, bootstrapToken },
    cache: {
      maxEntries: integer(env, "APIKEYS_CACHE_MAX_ENTRIES", 100_000, 0, 100_000_000),
      maxBytes: integer(env, "APIKEYS_CACHE_MAX_MEGABYTES", 64, 1, 1_000_000) * 1024 * 1024,
      maxAgeMs: integer(env, "APIKEYS_CACHE_MAX_AGE_SECONDS", 300, 0, 86_400) * 1000,
      verdictTtlMs: integer(env, "APIKEYS_VERDICT_TTL_SECONDS", 10, 0, 3600) * 1000,
      outageStalenessMs: integer(env, "APIKEYS_OUTAGE_STALENESS_SECONDS", 30, 0, 3600) * 1000,
    },
    throttle: {
      authFailureLimit: integer(env, "APIKEYS_AUTH_FAILURE_LIMIT", 100, 0, 1_000_000),
      authFailureWindowMs: integer(env, "APIKEYS_AUTH_FAILURE_WINDOW_SECONDS", 60, 1, 86_400) * 1000,
    },
    signing: {
      secretKey,
      jwtMaxLifetimeMs: integer(env, "APIKEYS_JWT_MAX_LIFETIME_SECONDS", 300, 1, 86_400) * 1000,
      jwtClockSkewMs: integer(env, "APIKEYS_JWT_CLOCK_SKEW_SECONDS", 30, 0, 600) * 1000,
    },
    audit: { requestMaxBytes: integer(env, "APIKEYS_AUDIT_REQUEST_MAX_BYTES", 8_192, 256, 65_536) },
    redis,
    usage: {
      retentionMs: integer(env, "APIKEYS_USAGE_RETENTION_DAYS", 90, 1, 3_650) * 86_400_000,
      flushIntervalMs: integer(env, "APIKEYS_USAGE_FLUSH_SECONDS", 5, 1, 3_600) * 1000,
    },

  };
}
