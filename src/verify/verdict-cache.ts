import { OriginFilter } from "../keys/cidr.js";
import type { KeyRecord } from "../keys/key-record.js";

interface Entry extends CachedKey {
  expiresAt: number;
  /** Approximate memory the entry holds of its own (see estimateBytes). */
  bytes: number;
}

/** What every entry costs beyond its strings: the entry, record and Date objects, map slots and indexes. */
const ENTRY_OVERHEAD_BYTES = 600;

/**
 * Approximate bytes an entry holds of its own: its token hash and every string of
 * its record at two bytes a character, plus a fixed overhead. Its policy and CIDR
 * filter are shared among entries and not counted here.
 */
function estimateBytes(hash: string, record: KeyRecord): number {
  let chars = hash.length + record.id.length + record.name.length + record.start.length + record.description.length;
  chars += (record.createdBy?.length ?? 0) + (record.consumer === null ? 0 : record.consumer.id.length + record.consumer.username.length);
  // for…in, not Object.entries: no array of pairs per entry on the cold path.
  const { metadata, environment } = record;
  for (const k in metadata) chars += k.length + metadata[k]!.length + 16;
  for (const k in environment) chars += k.length + String(environment[k]).length + 16;
  for (const cidr of record.allowedCidrs) chars += cidr.length + 8;
  return ENTRY_OVERHEAD_BYTES + 2 * chars;
}

/** A cached key plus its permissions and CIDRs compiled, ready to check a request against. */
export interface CachedKey {
  record: KeyRecord;
  permissionSet: ReadonlySet<string>;
  origins: OriginFilter;
}

/** A policy version shared by the cached keys that use it. */
interface SharedPolicy {
  policy: KeyRecord["policy"];
  permissionSet: ReadonlySet<string>;
  /**
   * Until when (epoch ms) a cold lookup may take this policy instead of reading it: as
   * long as an entry cached with it could live. 0: shared only, never answered from.
   */
  trustedUntil: number;
}

/** The filter of the default allow-list (every IPv4 and IPv6 origin). */
const ANY_ORIGIN = new OriginFilter(["0.0.0.0/0", "::/0"]);

/** Most policies and consumers remembered for cold lookups; past it the oldest go. */
const MAX_SHARED = 10_000;

/**
 * Bounded LRU of verdict inputs keyed by token hash, with indexes by key and
 * policy id so an invalidation evicts exactly the affected entries. It also
 * remembers the policies and consumers of the entries it caches, so that a cold
 * lookup of another key of the same policy reads only that key's own row.
 */
export class VerdictCache {
  private readonly entries = new Map<string, Entry>();
  private readonly byKey = new Map<string, Set<string>>();
  private readonly byPolicy = new Map<string, Set<string>>();
  /** Bumped by every invalidation, so a read that raced one is not cached. */
  private generation = 0;
  /**
   * One policy object and permission set per policy version, shared by all its
   * cached keys: a cached key then costs its own fields, not a copy of its policy.
   */
  private readonly policies = new Map<string, SharedPolicy>();
  /** Consumers' usernames by id (a consumer never changes; deleting one deletes its keys first). */
  private readonly consumers = new Map<string, string>();
  /** Compiled allow-lists shared by keys with the same CIDRs (most keep the any-origin default). */
  private readonly originFilters = new Map<string, OriginFilter>();
  /** Sum of the entries' estimated bytes. */
  private totalBytes = 0;
  hits = 0;
  misses = 0;
  evictions = 0;

  /** At most `maxEntries` entries and, by estimate, `maxBytes` bytes of them: whichever is reached first. */
  constructor(
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
    private readonly maxBytes = Number.POSITIVE_INFINITY,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** Estimated bytes the entries hold. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** The current generation; pass it back to `set` to detect a racing invalidation. */
  currentGeneration(): number {
    return this.generation;
  }

  /** Whether an entry read now could be cached for `ttlMs` at all. */
  canStore(ttlMs: number): boolean {
    return this.maxEntries > 0 && ttlMs > 0;
  }

  /**
   * The policy of a cached entry, while such an entry could still be cached: no
   * invalidation of the policy since and not older than the cache's TTL. A lookup
   * that takes it caches its result at the generation it started at, as any other.
   */
  knownPolicy(id: string): KeyRecord["policy"] | undefined {
    const shared = this.policies.get(id);
    return shared !== undefined && shared.trustedUntil > this.now() ? shared.policy : undefined;
  }

  /** The username of a consumer a cached entry had. */
  knownConsumer(id: string): string | undefined {
    return this.consumers.get(id);
  }

  get(hash: string): CachedKey | undefined {
    const entry = this.entries.get(hash);
    if (entry === undefined) {
      this.misses++;
      return undefined;
    }
    if (entry.expiresAt <= this.now()) {
      this.delete(hash);
      this.misses++;
      return undefined;
    }
    // Re-insert to mark as most recently used.
    this.entries.delete(hash);
    this.entries.set(hash, entry);
    this.hits++;
    return entry;
  }

  /**
   * Caches a record read at `generation`, unless an invalidation happened since,
   * for `ttlMs` but never past `notAfter` (epoch ms), e.g. a rotation grace end.
   */
  set(hash: string, record: KeyRecord, ttlMs: number, generation: number, notAfter = Infinity): CachedKey {
    const now = this.now();
    const expiresAt = Math.min(now + ttlMs, notAfter);
    const stored = generation === this.generation && this.canStore(ttlMs) && expiresAt > now;
    // A policy read at the entry's generation may answer for other keys as long as the entry may: until the TTL, not the grace end.
    const shared = this.sharedPolicy(record.policy, stored ? now + ttlMs : 0);
    const entry: Entry = {
      record: shared.policy === record.policy ? record : { ...record, policy: shared.policy },
      permissionSet: shared.permissionSet,
      origins: this.originFilter(record.allowedCidrs),
      expiresAt,
      bytes: estimateBytes(hash, record),
    };
    if (!stored) return entry;
    if (record.consumer !== null && !this.consumers.has(record.consumer.id)) remember(this.consumers, record.consumer.id, record.consumer.username);
    this.delete(hash);
    this.entries.set(hash, entry);
    this.totalBytes += entry.bytes;
    index(this.byKey, record.id, hash);
    index(this.byPolicy, record.policy.id, hash);
    while (this.entries.size > this.maxEntries || (this.totalBytes > this.maxBytes && this.entries.size > 0)) {
      const oldest = this.entries.keys().next().value as string;
      this.delete(oldest);
      this.evictions++;
    }
    return entry;
  }

  /** Evicts every entry of a key. */
  invalidateKey(id: string): void {
    this.generation++;
    for (const hash of [...(this.byKey.get(id) ?? [])]) this.delete(hash);
  }

  /** Evicts every entry whose key uses a policy. */
  invalidatePolicy(id: string): void {
    this.generation++;
    this.policies.delete(id);
    for (const hash of [...(this.byPolicy.get(id) ?? [])]) this.delete(hash);
  }

  /** Evicts everything (e.g. after missed invalidations). */
  clear(): void {
    this.generation++;
    this.entries.clear();
    this.totalBytes = 0;
    this.byKey.clear();
    this.byPolicy.clear();
    this.policies.clear();
    this.consumers.clear();
  }

  /**
   * The shared copy of a policy when it is the same version (trusted until at least
   * `trustUntil`), else this one, which becomes the shared copy, trusted until then.
   */
  private sharedPolicy(policy: KeyRecord["policy"], trustUntil: number): SharedPolicy {
    const known = this.policies.get(policy.id);
    if (known !== undefined && (known.policy === policy || samePolicy(known.policy, policy))) {
      if (trustUntil > known.trustedUntil) known.trustedUntil = trustUntil;
      return known;
    }
    const fresh: SharedPolicy = { policy, permissionSet: new Set(policy.permissions), trustedUntil: trustUntil };
    this.policies.delete(policy.id);
    remember(this.policies, policy.id, fresh);
    return fresh;
  }

  private originFilter(cidrs: readonly string[]): OriginFilter {
    // Most keys keep the default list: no joined string to build for them.
    if (cidrs.length === 2 && cidrs[0] === "0.0.0.0/0" && cidrs[1] === "::/0") return ANY_ORIGIN;
    const key = cidrs.join(",");
    let filter = this.originFilters.get(key);
    if (filter === undefined) {
      // Bounded: past this many distinct lists, start over rather than grow.
      if (this.originFilters.size >= 1024) this.originFilters.clear();
      filter = new OriginFilter(cidrs);
      this.originFilters.set(key, filter);
    }
    return filter;
  }

  private delete(hash: string): void {
    const entry = this.entries.get(hash);
    if (entry === undefined) return;
    this.entries.delete(hash);
    this.totalBytes -= entry.bytes;
    unindex(this.byKey, entry.record.id, hash);
    unindex(this.byPolicy, entry.record.policy.id, hash);
  }
}

function samePolicy(a: KeyRecord["policy"], b: KeyRecord["policy"]): boolean {
  return (
    a.updatedOn.getTime() === b.updatedOn.getTime() &&
    a.name === b.name &&
    a.description === b.description &&
    a.permissions.length === b.permissions.length &&
    a.permissions.every((p, i) => p === b.permissions[i])
  );
}

/** Adds to a map bounded at MAX_SHARED entries, forgetting the oldest first. */
function remember<V>(map: Map<string, V>, id: string, value: V): void {
  if (map.size >= MAX_SHARED) map.delete(map.keys().next().value as string);
  map.set(id, value);
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
