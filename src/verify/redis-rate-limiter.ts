import { Redis } from "ioredis";
import type { Logger } from "pino";
import { ApiError } from "../errors.js";
import type { RateLimit } from "../keys/key-record.js";

/**
 * GCRA (the generic cell rate algorithm) in one Lua script, so the check and
 * the update are atomic on the Redis server and every instance shares one
 * clock (Redis's TIME). State per key: its theoretical arrival time (TAT), in
 * microseconds. With emission interval T = period / requests and a burst of
 * `requests`, a request at `now` is allowed when TAT - now <= period - T; it
 * then moves TAT to max(TAT, now) + T. This is exactly the token bucket of the
 * per-instance limiter (a burst of `requests`, refilled evenly over `period`),
 * enforced once for the whole fleet.
 */
const GCRA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat + interval - period - now
if wait > 0 then return {0, math.ceil(wait / 1000)} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, 0}
`;

export interface RedisRateLimiterOptions {
  url: string;
  /** Prefix of every key this limiter writes (one deployment may share a Redis). */
  keyPrefix: string;
  /** How long a connection attempt may take. */
  connectTimeoutMs: number;
  /** How long one script call may take before the verification fails closed. */
  commandTimeoutMs: number;
}

/**
 * Per-key rate limits enforced across every instance through Redis. One
 * connection, multiplexed (ioredis pipelines concurrent calls on it), which
 * reconnects on its own with backoff. While Redis cannot be reached, calls are
 * not queued: `take` fails at once with `unavailable` (fail closed), and
 * recovers without a restart when the connection is back.
 */
export class RedisRateLimiter {
  private readonly redis: Redis;
  private lastError: string | undefined;

  constructor(
    private readonly options: RedisRateLimiterOptions,
    logger: Logger,
  ) {
    this.redis = new Redis(options.url, {
      connectTimeout: options.connectTimeoutMs,
      commandTimeout: options.commandTimeoutMs,
      // Fail closed at once while disconnected rather than hold verifications in a queue.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // Reconnect forever, backing off to 2 s.
      retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
      lazyConnect: false,
    });
    this.redis.defineCommand("apikeysGcra", { numberOfKeys: 1, lua: GCRA });
    this.redis.on("error", (err: Error) => {
      if (this.lastError !== err.message) logger.warn({ err: err.message }, "redis (rate limits) unreachable");
      this.lastError = err.message;
    });
    this.redis.on("ready", () => {
      if (this.lastError !== undefined) logger.info("redis (rate limits) reachable again");
      this.lastError = undefined;
    });
  }

  /** Resolves once connected (true), or false after `timeoutMs` (checks fail closed until it connects). */
  connected(timeoutMs: number): Promise<boolean> {
    if (this.ready) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.redis.off("ready", onReady);
        resolve(ok);
      };
      const onReady = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.redis.once("ready", onReady);
    });
  }

  /** Whether the connection is up and ready for commands. */
  get ready(): boolean {
    return this.redis.status === "ready";
  }

  /** A line for GetServiceHealth. */
  describe(): string {
    return this.ready ? "global (redis)" : `global (redis) unreachable: ${this.lastError ?? this.redis.status}`;
  }

  /**
   * Takes one request from the key's fleet-wide allowance; false when over the
   * limit. Throws `unavailable` (RATE_LIMIT_UNAVAILABLE) when Redis does not answer in time.
   */
  async take(keyId: string, limit: RateLimit): Promise<boolean> {
    // The limit is part of the key: a changed limit starts over, as the per-instance buckets do.
    const key = `${this.options.keyPrefix}rl:${keyId}:${limit.requests}:${limit.periodMs}`;
    const periodUs = limit.periodMs * 1000;
    const intervalUs = periodUs / limit.requests;
    let answer: [number, number];
    try {
      answer = (await (this.redis as unknown as GcraCommand).apikeysGcra(key, String(intervalUs), String(periodUs))) as [number, number];
    } catch (err) {
      throw new ApiError("RATE_LIMIT_UNAVAILABLE", "rate limits cannot be checked (redis unreachable); retry shortly", {
        retryAfterMs: 1_000,
        cause: err,
      });
    }
    return answer[0] === 1;
  }

  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}

interface GcraCommand {
  apikeysGcra(key: string, intervalUs: string, periodUs: string): Promise<unknown>;
}
