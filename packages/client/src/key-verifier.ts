import { hash as oneShotHash } from "node:crypto";
import { durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { type ApiKeysService, VerifyCode, type VerifyTokenResponse } from "./gen/apikeys/v1/api_keys_pb.js";
import { generateToken, parseToken } from "./token-format.js";
import { InvalidationWatcher, type WatchOptions } from "./invalidation-watcher.js";
import { type TokenVerdict, VerificationCache } from "./verification-cache.js";

/** What the verifier reports, e.g. to log or to wait on in tests. */
export type VerifierEvent =
  | { type: "resync" }
  | { type: "invalidation"; kind: "key" | "policy"; id: string }
  | { type: "disconnect"; error: ConnectError };

export interface KeyVerifierOptions extends WatchOptions {
  client: Client<typeof ApiKeysService>;
  /** Token prefix the apikeys server issues (APIKEYS_TOKEN_PREFIX). Default "ak". */
  tokenPrefix?: string;
  /** Most verdicts kept in memory. Default 10,000. */
  maxEntries?: number;
  /** Longest a verdict is trusted while evictions stream in. Default 5 min. */
  maxAgeMs?: number;
  /** Longest a verdict is trusted while the stream is down. Default 5 s (or less if the server says so). */
  disconnectedTtlMs?: number;
  /** How long a refused token stays refused without asking again. Default 5 s. */
  negativeTtlMs?: number;
  /** Subscribe to WatchInvalidations. Default true; without it every verdict lives the short TTL. */
  watch?: boolean;
  onEvent?: (event: VerifierEvent) => void;
}

/**
 * Verifies tokens in-process: a malformed token is refused with no I/O, a cached
 * verdict is answered with no I/O, anything else asks VerifyToken once (however
 * many calls wait on it). The cache is kept exact by WatchInvalidations.
 */
export class KeyVerifier {
  readonly cache: VerificationCache;
  /** VerifyToken calls made. */
  remoteCalls = 0;
  private readonly pending = new Map<string, Promise<TokenVerdict>>();
  private readonly watcher: InvalidationWatcher | undefined;
  private readonly client: Client<typeof ApiKeysService>;
  private readonly prefix: string;
  /** The length of every well-formed token with `prefix`. */
  private readonly tokenLength: number;
  private readonly maxAgeMs: number;
  private readonly disconnectedTtlMs: number;
  private readonly negativeTtlMs: number;
  private readonly onEvent: (event: VerifierEvent) => void;

  constructor(options: KeyVerifierOptions) {
    this.client = options.client;
    this.prefix = options.tokenPrefix ?? "ak";
    this.tokenLength = generateToken(this.prefix).length;
    this.maxAgeMs = options.maxAgeMs ?? 300_000;
    this.disconnectedTtlMs = options.disconnectedTtlMs ?? 5_000;
    this.negativeTtlMs = options.negativeTtlMs ?? 5_000;
    this.onEvent = options.onEvent ?? (() => {});
    this.cache = new VerificationCache(options.maxEntries ?? 10_000);
    if (options.watch ?? true) {
      this.watcher = new InvalidationWatcher(
        this.client,
        {
          onResync: () => {
            this.cache.clear();
            this.onEvent({ type: "resync" });
          },
          onInvalidation: (kind, id) => {
            if (kind === "key") this.cache.invalidateKey(id);
            else this.cache.invalidatePolicy(id);
            this.onEvent({ type: "invalidation", kind, id });
          },
          onDisconnect: (error) => {
            this.cache.capExpiry(this.disconnectedTtlMs);
            this.onEvent({ type: "disconnect", error });
          },
        },
        options,
      );
    }
  }

  /** True while evictions stream in, i.e. cached verdicts are exact. */
  get connected(): boolean {
    return this.watcher?.connected ?? false;
  }

  /**
   * The verdict on a token, from `clientIp` when given (keys may be limited to
   * CIDRs). Throws `unavailable` only when apikeys cannot be asked.
   */
  async verify(token: string, clientIp?: string): Promise<TokenVerdict> {
    // Only well-formed tokens are ever cached, so a cache hit needs no checksum: the length test
    // keeps a caller from making us hash a megabyte, and a miss checks the whole format before asking apikeys.
    if (token.length !== this.tokenLength) return { valid: false, code: VerifyCode.NOT_FOUND };
    // The address is part of the verdict, so it is part of the cache key.
    // One-shot crypto.hash: a third of createHash's cost on this, the SDK's hottest line; its 32 bytes as a
    // one-byte string ("binary", i.e. latin1), which costs less to build than base64 and is as good a Map key.
    const hash = oneShotHash("sha256", clientIp === undefined ? token : `${token}\0${clientIp}`, "binary");
    const cached = this.cache.get(hash);
    if (cached !== undefined) return cached;
    if (parseToken(token, this.prefix) === undefined) return { valid: false, code: VerifyCode.NOT_FOUND };
    let lookup = this.pending.get(hash);
    if (lookup === undefined) {
      lookup = this.remote(hash, token, clientIp).finally(() => this.pending.delete(hash));
      this.pending.set(hash, lookup);
    }
    return lookup;
  }

  /** Stops watching for invalidations. */
  async close(): Promise<void> {
    await this.watcher?.close();
  }

  private async remote(hash: string, token: string, clientIp: string | undefined): Promise<TokenVerdict> {
    const generation = this.cache.currentGeneration();
    this.remoteCalls++;
    let response: VerifyTokenResponse;
    try {
      response = await this.client.verifyToken({ token, clientIp: clientIp ?? "" });
    } catch (err) {
      const error = ConnectError.from(err);
      throw new ConnectError(`cannot verify API keys: apikeys answered ${Code[error.code]}: ${error.rawMessage}`, Code.Unavailable);
    }
    const verdict = toVerdict(response);
    this.cache.set(hash, verdict, this.ttl(verdict, response), generation);
    return verdict;
  }

  private ttl(verdict: TokenVerdict, response: VerifyTokenResponse): number {
    if (!verdict.valid) {
      // Rate limits and addresses are judged per call; everything else stays refused until an event says otherwise.
      // Credits too: a top-up or a refill makes the key good again with no event.
      const perCall =
        verdict.code === VerifyCode.RATE_LIMITED || verdict.code === VerifyCode.USAGE_EXCEEDED || verdict.code === VerifyCode.UNSPECIFIED;
      return perCall ? 0 : this.negativeTtlMs;
    }
    const key = verdict.key.apiKey;
    // Every call of a rate-limited key must count against its limit, and of a key with credits spend them.
    if ((key.rateLimit?.requests ?? 0) > 0 || key.remaining !== undefined || response.remaining !== undefined) return 0;
    let ttl = this.maxAgeMs;
    if (!this.connected) {
      const serverTtl = response.cacheTtl === undefined ? this.disconnectedTtlMs : durationMs(response.cacheTtl);
      ttl = Math.min(this.disconnectedTtlMs, serverTtl);
    }
    // Expiry is a moment, not an event: no invalidation will announce it.
    if (key.expiresOn !== undefined) ttl = Math.min(ttl, timestampMs(key.expiresOn) - Date.now());
    return ttl;
  }
}

function toVerdict(response: VerifyTokenResponse): TokenVerdict {
  const key = response.apiKey;
  if (response.valid && key !== undefined) {
    const policy = { id: key.policy?.id ?? "", name: key.policy?.name ?? "" };
    const permissions = [...response.permissions];
    return {
      valid: true,
      key: { id: key.id, name: key.name, policy, permissions, environment: response.environment ?? {}, apiKey: key },
      permissionSet: new Set(permissions),
    };
  }
  const code = response.valid ? VerifyCode.NOT_FOUND : response.code;
  return { valid: false, code, keyId: key?.id, policyId: key?.policy?.id };
}

/** Permissions a requirement asks for that `granted` lacks; empty when it is met. */
export function missingPermissions(granted: ReadonlySet<string>, allOf: readonly string[], anyOf: readonly string[]): string[] {
  const missing = allOf.filter((p) => !granted.has(p));
  if (anyOf.length > 0 && !anyOf.some((p) => granted.has(p))) {
    missing.push(...anyOf.filter((p) => !missing.includes(p)));
  }
  return missing;
}
