import type { RateLimit } from "../keys/key-record.js";

interface Bucket {
  requests: number;
  periodMs: number;
  tokens: number;
  updatedAt: number;
}

/**
 * Per-instance token buckets, one per rate-limited key: a burst of up to
 * `requests`, refilled evenly over `periodMs`. Memory is bounded; a bucket that
 * has refilled completely is forgotten (it behaves exactly like a new one), and
 * when every tracked bucket is still draining and the bound is reached, new keys
 * are refused rather than let through untracked.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly maxBuckets: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.buckets.size;
  }

  /** Takes one request from the key's bucket; false when the key is over its limit. */
  take(keyId: string, limit: RateLimit): boolean {
    const now = this.now();
    let bucket = this.buckets.get(keyId);
    if (bucket !== undefined && (bucket.requests !== limit.requests || bucket.periodMs !== limit.periodMs)) {
      // The limit changed: start over under the new one.
      this.buckets.delete(keyId);
      bucket = undefined;
    }
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxBuckets) {
        this.sweep();
        if (this.buckets.size >= this.maxBuckets) return false;
      }
      bucket = { requests: limit.requests, periodMs: limit.periodMs, tokens: limit.requests, updatedAt: now };
      this.buckets.set(keyId, bucket);
    } else {
      bucket.tokens = refilled(bucket, now);
      bucket.updatedAt = now;
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Forgets buckets that have refilled completely. */
  sweep(): void {
    const now = this.now();
    for (const [id, bucket] of this.buckets) if (refilled(bucket, now) >= bucket.requests) this.buckets.delete(id);
  }
}

function refilled(bucket: Bucket, now: number): number {
  return Math.min(bucket.requests, bucket.tokens + ((now - bucket.updatedAt) * bucket.requests) / bucket.periodMs);
}
