/**
 * One value polled on behalf of every watcher: while anyone watches, `check` runs
 * every `intervalMs` (once, however many watchers there are), and each watcher is
 * told the current value and then every change. Nobody watching, nothing runs.
 */
export class SharedStatus<T> {
  private value: T | undefined;
  private version = 0;
  private watchers = 0;
  /** Bumped on every start and stop, so a check in flight from an earlier round is ignored. */
  private round = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly waiting = new Set<() => void>();

  constructor(
    private readonly check: () => Promise<T>,
    private readonly intervalMs: number,
  ) {}

  /** Number of watchers, for tests. */
  get size(): number {
    return this.watchers;
  }

  /** The current value, then each change, until `signal` aborts. */
  async *changes(signal: AbortSignal): AsyncGenerator<T> {
    if (++this.watchers === 1) this.start();
    try {
      let seen = -1;
      while (!signal.aborted) {
        if (this.value !== undefined && this.version !== seen) {
          seen = this.version;
          yield this.value;
          continue;
        }
        await new Promise<void>((resolve) => {
          const wake = () => {
            this.waiting.delete(wake);
            signal.removeEventListener("abort", wake);
            resolve();
          };
          this.waiting.add(wake);
          signal.addEventListener("abort", wake, { once: true });
        });
      }
    } finally {
      if (--this.watchers === 0) this.stop();
    }
  }

  private start(): void {
    const round = ++this.round;
    const poll = async () => {
      let value: T;
      try {
        value = await this.check();
      } catch {
        // A failed check changes nothing; the next one runs on schedule.
        value = this.value as T;
      }
      if (round !== this.round) return;
      if (value !== undefined && value !== this.value) {
        this.value = value;
        this.version++;
        for (const wake of [...this.waiting]) wake();
      }
      this.timer = setTimeout(() => void poll(), this.intervalMs).unref();
    };
    void poll();
  }

  private stop(): void {
    this.round++;
    clearTimeout(this.timer);
    // The next watcher after a pause gets a fresh value, not a stale one.
    this.value = undefined;
  }
}
