/**
 * Proves a LISTEN connection alive: every `intervalMs` it sends a NOTIFY to the
 * connection's own ping channel (through another connection, so the whole path
 * a writer's NOTIFY takes is exercised) and expects it back within `intervalMs`.
 * A connection that stopped delivering without closing (half-open: a frozen
 * backend, a dropped route, a stalled proxy) never errors; a missed echo is how
 * it is noticed.
 */
export class ListenerLiveness {
  private sequence = 0;
  private expected: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** When the last echo arrived (epoch ms); undefined before the first. */
  lastEchoAt: number | undefined;

  constructor(
    private readonly intervalMs: number,
    /** Sends `payload` on the ping channel; a failure counts as no echo when the deadline passes. */
    private readonly ping: (payload: string) => Promise<void>,
    /** Each echo that arrived in time. */
    private readonly onAlive: () => void,
    /** Once, when an echo is missed; the connection must be given up. */
    private readonly onMissed: (reason: string) => void,
    private readonly onPingError: (err: Error) => void,
  ) {}

  /** Sends the first ping at once. */
  start(): void {
    this.send();
  }

  /** Feeds a payload received on the ping channel. */
  echo(payload: string): void {
    if (this.stopped || payload !== this.expected) return;
    clearTimeout(this.timer);
    this.expected = undefined;
    this.lastEchoAt = Date.now();
    this.onAlive();
    this.timer = setTimeout(() => this.send(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private send(): void {
    if (this.stopped) return;
    const payload = String(++this.sequence);
    this.expected = payload;
    this.timer = setTimeout(() => {
      this.stop();
      this.onMissed(`no echo of its self-NOTIFY within ${this.intervalMs} ms`);
    }, this.intervalMs);
    this.timer.unref();
    this.ping(payload).catch((err: Error) => this.onPingError(err));
  }
}
