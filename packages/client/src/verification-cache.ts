import type { JsonObject } from "@bufbuild/protobuf";
import type { VerifyCode } from "./gen/apikeys/v1/api_keys_pb.js";
import type { ApiKey } from "./gen/apikeys/v1/resources_pb.js";

/** The key behind a verified token, as handlers see it. */
export interface VerifiedKey {
  id: string;
  name: string;
  policy: { id: string; name: string };
  /** Effective permissions (the policy's), canonical and sorted. */
  permissions: readonly string[];
  /** Flat variables the admins attached to the key; empty when none. */
  environment: JsonObject;
  /** The key as the apikeys service describes it. */
  apiKey: ApiKey;
}

/** What the SDK knows about a token: valid (with its key) or refused (with why). */
export type TokenVerdict =
  | { valid: true; key: VerifiedKey; permissionSet: ReadonlySet<string> }
  | { valid: false; code: VerifyCode; keyId?: string | undefined; policyId?: string | undefined };

interface Entry {
  verdict: TokenVerdict;
  expiresAt: number;
  keyId: string | undefined;
  policyId: string | undefined;
}

/**
 * Bounded LRU of token verdicts keyed by token hash, indexed by key and policy
 * id so an invalidation evicts exactly what it names.
 */
export class VerificationCache {
  private readonly entries = new Map<string, Entry>();
  private readonly byKey = new Map<string, Set<string>>();
  private readonly byPolicy = new Map<string, Set<string>>();
  /** Bumped by every eviction event, so a lookup that raced one is not cached. */
  private generation = 0;
  hits = 0;
  misses = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The current generation; pass it back to `set` to detect a racing eviction. */
  currentGeneration(): number {
    return this.generation;
  }

  /** The cached verdict for a token hash, if present and not expired. */
  get(hash: string): TokenVerdict | undefined {
    const entry = this.entries.get(hash);
    if (entry === undefined || entry.expiresAt <= this.now()) {
      if (entry !== undefined) this.delete(hash);
      this.misses++;
      return undefined;
    }
    // Re-insert to mark as most recently used.
    this.entries.delete(hash);
    this.entries.set(hash, entry);
    this.hits++;
    return entry.verdict;
  }

  /** Caches a verdict fetched at `generation`, unless an eviction event came since. */
  set(hash: string, verdict: TokenVerdict, ttlMs: number, generation: number): void {
    if (generation !== this.generation || this.maxEntries === 0 || ttlMs <= 0) return;
    const keyId = verdict.valid ? verdict.key.id : verdict.keyId;
    const policyId = verdict.valid ? verdict.key.policy.id : verdict.policyId;
    this.delete(hash);
    this.entries.set(hash, { verdict, expiresAt: this.now() + ttlMs, keyId, policyId });
    if (keyId !== undefined) index(this.byKey, keyId, hash);
    if (policyId !== undefined) index(this.byPolicy, policyId, hash);
    while (this.entries.size > this.maxEntries) {
      this.delete(this.entries.keys().next().value as string);
    }
  }

  /** Evicts every verdict about one key. */
  invalidateKey(id: string): void {
    this.generation++;
    for (const hash of [...(this.byKey.get(id) ?? [])]) this.delete(hash);
  }

  /** Evicts every verdict about a key of one policy. */
  invalidatePolicy(id: string): void {
    this.generation++;
    for (const hash of [...(this.byPolicy.get(id) ?? [])]) this.delete(hash);
  }

  /** Evicts everything (after events may have been missed). */
  clear(): void {
    this.generation++;
    this.entries.clear();
    this.byKey.clear();
    this.byPolicy.clear();
  }

  /** Shortens every entry to live at most `ttlMs` more (when evictions stop arriving). */
  capExpiry(ttlMs: number): void {
    const latest = this.now() + ttlMs;
    for (const entry of this.entries.values()) entry.expiresAt = Math.min(entry.expiresAt, latest);
  }

  private delete(hash: string): void {
    const entry = this.entries.get(hash);
    if (entry === undefined) return;
    this.entries.delete(hash);
    if (entry.keyId !== undefined) unindex(this.byKey, entry.keyId, hash);
    if (entry.policyId !== undefined) unindex(this.byPolicy, entry.policyId, hash);
  }
}

function index(map: Map<string, Set<string>>, id: string, hash: string): void {
  let set = map.get(id);
  if (set === undefined) map.set(id, (set = new Set()));
  set.add(hash);
}

function unindex(map: Map<string, Set<string>>, id: string, hash: string): void {
  const set = map.get(id);
  if (set === undefined) return;
  set.delete(hash);
  if (set.size === 0) map.delete(id);
}
