/** How many failed authentications an address may make per window. */
export interface FailureThrottleOptions {
  /** Failures allowed per address per window; 0 turns throttling off. */
  limit: number;
  windowMs: number;
  /** Most addresses tracked at once; beyond it the longest-tracked are forgotten. */
  maxAddresses?: number;
}

interface Window {
  startedAt: number;
  failures: number;
}

/**
 * Counts failed authentications (unknown or malformed tokens) per client address
 * in fixed windows. Once an address reaches the limit, every token it presents is
 * refused without being looked up until its window ends, so that a valid answer
 * cannot serve as an oracle while it is blocked. Addresses are not known for
 * in-process calls (""), which are never throttled.
 */
export class FailureThrottle {
  private readonly windows = new Map<string, Window>();
  private readonly maxAddresses: number;
  /** Attempts refused because their address was blocked. */
  throttled = 0;

  constructor(
    private readonly options: FailureThrottleOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.maxAddresses = options.maxAddresses ?? 100_000;
  }

  /** Milliseconds until `address` may try again; 0 when it is not blocked. Counts a refusal when blocked. */
  retryAfterMs(address: string): number {
    if (this.options.limit === 0 || address === "") return 0;
    const window = this.current(address);
    if (window === undefined || window.failures < this.options.limit) return 0;
    this.throttled++;
    return window.startedAt + this.options.windowMs - this.now();
  }

  /** Records a failed authentication from `address`. */
  recordFailure(address: string): void {
    if (this.options.limit === 0 || address === "") return;
    let window = this.current(address);
    if (window === undefined) {
      if (this.windows.size >= this.maxAddresses) this.evict();
      window = { startedAt: this.now(), failures: 0 };
      this.windows.set(address, window);
    }
    window.failures++;
  }

  /** Addresses blocked right now. */
  blockedCount(): number {
    let blocked = 0;
    for (const address of [...this.windows.keys()]) {
      const window = this.current(address);
      if (window !== undefined && window.failures >= this.options.limit) blocked++;
    }
    return blocked;
  }

  /** Forgets windows that have ended. */
  sweep(): void {
    for (const address of [...this.windows.keys()]) this.current(address);
  }

  private current(address: string): Window | undefined {
    const window = this.windows.get(address);
    if (window !== undefined && window.startedAt + this.options.windowMs <= this.now()) {
      this.windows.delete(address);
      return undefined;
    }
    return window;
  }

  private evict(): void {
    this.sweep();
    // Still full: drop the oldest windows, since Map keeps insertion order.
    for (const address of this.windows.keys()) {
      if (this.windows.size < this.maxAddresses) break;
      this.windows.delete(address);
    }
  }
}
