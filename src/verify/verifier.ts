import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { PreparedQuery } from "../db/database.js";
import type { Database } from "../db/schema.js";
import { databaseError } from "../db/database-errors.js";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
import type { Invalidation } from "../db/invalidation.js";
import { findKeyRecordByTokenHash, touchKeys } from "../keys/key.repository.js";
import { findKeyRowByTokenHash, findPolicyWithConsumer, keyRecord } from "../keys/key-lookup.js";
import type { TokenSettings } from "../keys/key.service.js";
import { hashTokenBase64, parseToken, tokenLength } from "../tokens/token.js";
import { FailureThrottle } from "../auth/failure-throttle.js";
import { type SigningSettings, SignedCredentialVerifier, looksLikeJwt } from "./signed-credential-verifier.js";
import { UsageRecorder } from "../usage/usage-recorder.js";
import { spendCredits } from "./credits.js";
import { RateLimiter } from "./rate-limiter.js";
import type { RedisRateLimiter } from "./redis-rate-limiter.js";
import type { KeyRecord } from "../keys/key-record.js";
import { type CachedKey, VerdictCache } from "./verdict-cache.js";

/** The outcome of checking a token against a requirement. */
export interface Verdict {
  code: VerifyCode;
  /** Set whenever the token identifies a key, even when refused. */
  key?: KeyRecord;
  missing: string[];
  /** For a key with credits that got as far as spending them: how many are left. */
  remaining?: number;
}

export interface VerifierOptions {
  tokens: TokenSettings;
  cacheMaxEntries: number;
  /** Approximate memory the cache may hold (default: bounded by entries only). */
  cacheMaxBytes?: number;
  cacheMaxAgeMs: number;
  /** How often batched last-used times are written (and idle rate-limit buckets forgotten). */
  lastUsedFlushMs?: number;
  /** Most rate-limit buckets held at once (default 100,000). */
  rateLimitMaxKeys?: number;
  /** Failed authentications allowed per peer address (and guesses per caller and client_ip) per window (0 or unset: unlimited). */
  authFailureLimit?: number;
  authFailureWindowMs?: number;
  /** How long cached keys keep answering once the invalidation listener is lost (0 or unset: not at all). */
  outageStalenessMs?: number;
  /** How JWTs of signing keys are checked; unset: JWTs are never accepted. */
  signing?: SigningSettings;
  /** Runs the token lookup as a prepared statement (Postgres). */
  prepared?: PreparedQuery;
  /** Fleet-wide rate limits (REDIS_URL); unset: per-instance buckets. */
  globalRateLimiter?: RedisRateLimiter;
  /** The clock of expiry, refill boundaries and usage hours (default Date.now); tests move it. */
  now?: () => number;
}

/**
 * Verifies tokens: an in-memory cache kept exact by invalidation events, then the
 * checksum (no I/O for garbage), then one indexed query of the key's row by its
 * current token (a previous token's only when that finds nothing; its policy is
 * usually known from another cached key, else a second query by id).
 */
export class Verifier {
  readonly cache: VerdictCache;
  readonly rateLimiter: RateLimiter;
  /** Failed authentications of callers, per peer address (the auth check's). */
  readonly failures: FailureThrottle;
  /** Guessed tokens VerifyToken was asked about, per calling key and `client_ip` it named. */
  readonly verifyGuesses: FailureThrottle;
  /** Verification outcomes per key per hour, flushed with the last-used times. */
  readonly usage: UsageRecorder;
  /** Number of database lookups made; malformed tokens never add to it. */
  dbLookups = 0;
  /** How many of them also read the key's policy by id (it was not known from another cached key). */
  policyLookups = 0;
  private listening = false;
  /** While the listener is down: when the cache stops being trusted (epoch ms). */
  private staleUntil: number | undefined;
  /** Last use per key id (epoch ms), written in batches. */
  private readonly lastUsed = new Map<string, number>();
  private readonly flushTimer: NodeJS.Timeout;
  private readonly signed: SignedCredentialVerifier | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly options: VerifierOptions,
    private readonly logger: Logger,
  ) {
    this.cache = new VerdictCache(options.cacheMaxEntries, Date.now, options.cacheMaxBytes);
    this.rateLimiter = new RateLimiter(options.rateLimitMaxKeys ?? 100_000);
    const throttling = { limit: options.authFailureLimit ?? 0, windowMs: options.authFailureWindowMs ?? 60_000 };
    this.failures = new FailureThrottle(throttling);
    this.verifyGuesses = new FailureThrottle(throttling);
    this.usage = new UsageRecorder(db, logger);
    this.flushTimer = setInterval(() => {
      this.rateLimiter.sweep();
      this.failures.sweep();
      this.verifyGuesses.sweep();
      void this.flushLastUsed();
      void this.usage.flush();
    }, options.lastUsedFlushMs ?? 5_000);
    this.flushTimer.unref();
    this.signed =
      options.signing &&
      new SignedCredentialVerifier(db, options.signing, this.cache, () => (this.listening ? options.cacheMaxAgeMs : 0), logger);
  }

  /** Applies an invalidation event from any instance. */
  invalidate(event: Invalidation): void {
    if (event.kind === "key") this.cache.invalidateKey(event.id);
    else this.cache.invalidatePolicy(event.id);
  }

  /**
   * Follows the invalidation listener: while it is down events may be missed, so
   * nothing new is cached and what is cached answers for at most
   * `outageStalenessMs` (a database outage need not stop verification at once);
   * when it is back, everything cached before is dropped. `missedSince` is when
   * events may first have been missed (for a listener that silently stopped
   * delivering: its last proven delivery), where the staleness window starts.
   */
  setListening(listening: boolean, missedSince = Date.now()): void {
    this.listening = listening;
    const staleness = this.options.outageStalenessMs ?? 0;
    if (listening || staleness === 0) {
      this.staleUntil = undefined;
      this.cache.clear();
    } else {
      // Reconnect attempts report "down" again and again; the window starts at the first.
      this.staleUntil ??= missedSince + staleness;
    }
  }

  get isListening(): boolean {
    return this.listening;
  }

  /**
   * Finds the key a token belongs to, or undefined for malformed/unknown tokens: at
   * once (no promise) when the cache answers or the token is malformed, else once
   * the database has.
   */
  lookup(token: string): CachedKey | undefined | Promise<CachedKey | undefined> {
    const { prefix, pepper } = this.options.tokens;
    // Only a well-formed token can be cached (it passed parseToken to get there), so a cache hit
    // needs no checksum; the length test keeps a request from making us hash a megabyte.
    if (token.length !== tokenLength(prefix)) return undefined;
    const cacheKey = hashTokenBase64(token, pepper);
    if (this.staleUntil !== undefined && this.staleUntil <= Date.now() && this.cache.size > 0) this.cache.clear();
    const cached = this.cache.get(cacheKey);
    if (cached !== undefined) return cached;
    if (parseToken(token, prefix) === undefined) return undefined;
    return this.lookupStored(cacheKey);
  }

  /** The database's answer for a well-formed token that is not cached, cached for the next call. */
  private async lookupStored(cacheKey: string): Promise<CachedKey | undefined> {
    const hash = Buffer.from(cacheKey, "base64");
    const generation = this.cache.currentGeneration();
    const ttl = this.listening ? this.options.cacheMaxAgeMs : 0;
    this.dbLookups++;
    let found;
    try {
      // What cannot be cached is read in one query; else the key's own row, with the policy most likely known.
      found = this.cache.canStore(ttl) ? await this.readKey(hash) : await findKeyRecordByTokenHash(this.db, hash, this.options.prepared);
    } catch (err) {
      throw databaseError(err) ?? err;
    }
    if (found === undefined) return undefined;
    // A previous token's grace ends by this clock too, whatever the database's says.
    const graceEnd = found.graceEndsOn?.getTime() ?? Infinity;
    if (graceEnd <= Date.now()) return undefined;
    return this.cache.set(cacheKey, found.record, ttl, generation, graceEnd);
  }

  /**
   * The key of a token hash: its own row, with its policy and consumer as the cache
   * knows them, else read by id. Its result is cached at the generation taken before
   * the first read, so an invalidation during either read keeps it out of the cache.
   */
  private async readKey(hash: Uint8Array): Promise<{ record: KeyRecord; graceEndsOn: Date | null } | undefined> {
    const { prepared } = this.options;
    const row = await findKeyRowByTokenHash(this.db, hash, prepared);
    if (row === undefined) return undefined;
    let policy = this.cache.knownPolicy(row.policyId);
    let username = row.consumerId === null ? undefined : this.cache.knownConsumer(row.consumerId);
    if (policy === undefined || (row.consumerId !== null && username === undefined)) {
      this.policyLookups++;
      const read = await findPolicyWithConsumer(this.db, row.policyId, row.consumerId, prepared);
      // The policy went since the key was read, and its keys with it.
      if (read === undefined) return undefined;
      policy = read.policy;
      username = read.consumerUsername ?? undefined;
    }
    const consumer = row.consumerId !== null && username !== undefined ? { id: row.consumerId, username } : null;
    return { record: keyRecord(row, policy, consumer), graceEndsOn: row.graceEndsOn };
  }

  /**
   * Checks a token for a request from `clientIp` ("" when unknown) needing a
   * permission requirement; a refusal is a verdict, not an error. Checks run
   * in this order: found, enabled, not expired, address allowed, within the
   * rate limit (every attempt that gets this far counts), permissions, then
   * credits: a key with credits spends `cost` of them (0: none, but one must
   * be left) only when everything else passed. Every outcome of a known key is
   * counted in the usage analytics.
   *
   * The verdict comes at once (no promise, no microtask) when nothing needs I/O:
   * the key is cached (or the token malformed), its rate limit is this instance's
   * and it has no credits; else as a promise. Errors are thrown, or rejected, the
   * same way.
   */
  verify(token: string, allOf: readonly string[], anyOf: readonly string[], clientIp = "", cost = 1): Verdict | Promise<Verdict> {
    // A signing key's holder presents an HS256 JWT; its key then faces the same checks as any other.
    const found = this.signed !== undefined && looksLikeJwt(token) ? this.signed.resolve(token) : this.lookup(token);
    if (found instanceof Promise) return found.then((f) => this.counted(this.decide(f, allOf, anyOf, clientIp, cost)));
    return this.counted(this.decide(found, allOf, anyOf, clientIp, cost));
  }

  /** The verdict, counted in the usage analytics when it names a key. */
  private counted(decided: Verdict | Promise<Verdict>): Verdict | Promise<Verdict> {
    if (decided instanceof Promise) return decided.then((verdict) => this.count(verdict));
    return this.count(decided);
  }

  private count(verdict: Verdict): Verdict {
    if (verdict.key !== undefined) this.usage.record(verdict.key.id, verdict.code, this.now());
    return verdict;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  private decide(found: CachedKey | VerifyCode | undefined, allOf: readonly string[], anyOf: readonly string[], clientIp: string, cost: number): Verdict | Promise<Verdict> {
    if (found === undefined) return { code: VerifyCode.NOT_FOUND, missing: [] };
    if (typeof found === "number") return { code: found, missing: [] };
    const key = found.record;
    if (!key.enabled) return { code: VerifyCode.DISABLED, key, missing: [] };
    const now = this.now();
    if (key.expiresOn !== null && key.expiresOn.getTime() <= now) return { code: VerifyCode.EXPIRED, key, missing: [] };
    if (!found.origins.allows(clientIp)) return { code: VerifyCode.IP_NOT_ALLOWED, key, missing: [] };
    if (key.rateLimit !== null) {
      const within = this.takeRateLimit(key.id, key.rateLimit);
      if (within instanceof Promise) {
        return within.then((ok) => (ok ? this.permitted(found, allOf, anyOf, cost, now) : { code: VerifyCode.RATE_LIMITED, key, missing: [] }));
      }
      if (!within) return { code: VerifyCode.RATE_LIMITED, key, missing: [] };
    }
    return this.permitted(found, allOf, anyOf, cost, now);
  }

  /** The rest of `decide` once the rate limit let the call through: permissions, then credits. */
  private permitted(found: CachedKey, allOf: readonly string[], anyOf: readonly string[], cost: number, now: number): Verdict | Promise<Verdict> {
    const key = found.record;
    const permissions = found.permissionSet;
    const missing: string[] = [];
    for (const p of allOf) if (!permissions.has(p)) missing.push(p);
    if (anyOf.length > 0 && !anyOf.some((p) => permissions.has(p))) {
      missing.push(...anyOf.filter((p) => !missing.includes(p)));
    }
    if (missing.length > 0) return { code: VerifyCode.INSUFFICIENT_PERMISSIONS, key, missing };
    // Credits are spent in the database on every call, whatever is cached: instances share one count.
    if (key.remaining !== null) return this.spend(key, cost, now);
    this.lastUsed.set(key.id, now);
    return { code: VerifyCode.VALID, key, missing };
  }

  private async spend(key: KeyRecord, cost: number, now: number): Promise<Verdict> {
    let spend;
    try {
      spend = await spendCredits(this.db, key.id, cost, key.refill, now);
    } catch (err) {
      throw databaseError(err) ?? err;
    }
    if (spend.kind === "exceeded") {
      return { code: VerifyCode.USAGE_EXCEEDED, key: { ...key, remaining: spend.remaining }, missing: [], remaining: spend.remaining };
    }
    this.lastUsed.set(key.id, now);
    // The record answers with the count just spent, not the one it was cached with.
    if (spend.kind === "spent") return { code: VerifyCode.VALID, key: { ...key, remaining: spend.remaining }, missing: [], remaining: spend.remaining };
    return { code: VerifyCode.VALID, key, missing: [] };
  }

  /** Whether the key is within its rate limit: fleet-wide on Redis when configured (which may throw unavailable), else this instance's bucket. */
  private takeRateLimit(keyId: string, limit: NonNullable<KeyRecord["rateLimit"]>): boolean | Promise<boolean> {
    const global = this.options.globalRateLimiter;
    return global === undefined ? this.rateLimiter.take(keyId, limit) : global.take(keyId, limit);
  }

  /** Which rate-limit mode is active, and whether it works: for GetServiceHealth. */
  rateLimitHealth(): { healthy: boolean; message: string } {
    const global = this.options.globalRateLimiter;
    if (global === undefined) return { healthy: true, message: "per instance (in memory): set REDIS_URL for fleet-wide limits" };
    return { healthy: global.ready, message: global.describe() };
  }

  /** Writes batched last-used times in one statement. */
  async flushLastUsed(): Promise<void> {
    if (this.lastUsed.size === 0) return;
    const batch = new Map<string, Date>();
    for (const [id, at] of this.lastUsed) batch.set(id, new Date(at));
    this.lastUsed.clear();
    try {
      await touchKeys(this.db, batch);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "could not record last use of keys");
    }
  }

  async close(): Promise<void> {
    clearInterval(this.flushTimer);
    await this.flushLastUsed();
    await this.usage.flush();
    await this.options.globalRateLimiter?.close();
  }
}
