import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { Database } from "../db/schema.js";
import { toConnectError } from "../errors.js";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
import type { Invalidation } from "../invalidation/invalidation.js";
import { findKeyRecordByTokenHash, touchKeys } from "../keys/key.repository.js";
import type { TokenSettings } from "../keys/key.service.js";
import { hashToken, parseToken } from "../tokens/token.js";
import { type CachedKey, type KeyRecord, VerdictCache } from "./verdict-cache.js";

/** The outcome of checking a token against a requirement. */
export interface Verdict {
  code: VerifyCode;
  /** Set whenever the token identifies a key, even when refused. */
  key?: KeyRecord;
  missing: string[];
}

export interface VerifierOptions {
  tokens: TokenSettings;
  cacheMaxEntries: number;
  cacheMaxAgeMs: number;
  /** How often batched last-used times are written. */
  lastUsedFlushMs?: number;
}

/**
 * Verifies tokens: checksum first (no I/O for garbage), then an in-memory cache
 * kept exact by invalidation events, then one indexed query.
 */
export class Verifier {
  readonly cache: VerdictCache;
  /** Number of database lookups made; malformed tokens never add to it. */
  dbLookups = 0;
  private listening = false;
  private readonly lastUsed = new Map<string, Date>();
  private readonly flushTimer: NodeJS.Timeout;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly options: VerifierOptions,
    private readonly logger: Logger,
  ) {
    this.cache = new VerdictCache(options.cacheMaxEntries);
    this.flushTimer = setInterval(() => void this.flushLastUsed(), options.lastUsedFlushMs ?? 5_000);
    this.flushTimer.unref();
  }

  /** Applies an invalidation event from any instance. */
  invalidate(event: Invalidation): void {
    if (event.kind === "key") this.cache.invalidateKey(event.id);
    else this.cache.invalidatePolicy(event.id);
  }

  /**
   * Follows the invalidation listener: while it is down events may be missed, so
   * nothing is cached; when it is back, everything cached before is dropped.
   */
  setListening(listening: boolean): void {
    this.listening = listening;
    this.cache.clear();
  }

  get isListening(): boolean {
    return this.listening;
  }

  /** Finds the key a token belongs to, or undefined for malformed/unknown tokens. */
  async lookup(token: string): Promise<CachedKey | undefined> {
    if (parseToken(token, this.options.tokens.prefix) === undefined) return undefined;
    const hash = hashToken(token, this.options.tokens.pepper);
    const cacheKey = hash.toString("base64");
    const cached = this.cache.get(cacheKey);
    if (cached !== undefined) return cached;
    const generation = this.cache.currentGeneration();
    this.dbLookups++;
    let found;
    try {
      found = await findKeyRecordByTokenHash(this.db, hash);
    } catch (err) {
      throw toConnectError(err);
    }
    if (found === undefined) return undefined;
    let ttl = this.listening ? this.options.cacheMaxAgeMs : 0;
    if (found.graceEndsOn !== null) ttl = Math.min(ttl, found.graceEndsOn.getTime() - Date.now());
    return this.cache.set(cacheKey, found.record, ttl, generation);
  }

  /** Checks a token and a permission requirement; a refusal is a verdict, not an error. */
  async verify(token: string, allOf: readonly string[], anyOf: readonly string[]): Promise<Verdict> {
    const found = await this.lookup(token);
    if (found === undefined) return { code: VerifyCode.NOT_FOUND, missing: [] };
    const key = found.record;
    if (!key.enabled) return { code: VerifyCode.DISABLED, key, missing: [] };
    const missing = allOf.filter((p) => !found.permissionSet.has(p));
    if (anyOf.length > 0 && !anyOf.some((p) => found.permissionSet.has(p))) {
      missing.push(...anyOf.filter((p) => !missing.includes(p)));
    }
    if (missing.length > 0) return { code: VerifyCode.INSUFFICIENT_PERMISSIONS, key, missing };
    this.lastUsed.set(key.id, new Date());
    return { code: VerifyCode.VALID, key, missing };
  }

  /** Writes batched last-used times in one statement. */
  async flushLastUsed(): Promise<void> {
    if (this.lastUsed.size === 0) return;
    const batch = new Map(this.lastUsed);
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
  }
}
