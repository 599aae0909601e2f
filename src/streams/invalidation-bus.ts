import { Code, ConnectError } from "@connectrpc/connect";
import type { Invalidation } from "../db/invalidation.js";

/** Events a subscriber may have queued before it counts as fallen behind. */
const DEFAULT_MAX_QUEUE = 1_024;

/**
 * Relays this instance's invalidation events to its WatchInvalidations streams.
 * Subscribers exist only while the instance itself is listening, so a stream
 * that is open never silently misses an event.
 */
export class InvalidationBus {
  private readonly subscriptions = new Set<Subscription>();
  private listening = false;

  constructor(private readonly maxQueue = DEFAULT_MAX_QUEUE) {}

  /** Number of open subscriptions. */
  get size(): number {
    return this.subscriptions.size;
  }

  /** Delivers an event to every subscriber; one that has fallen behind is dropped instead. */
  publish(event: Invalidation): void {
    for (const subscription of this.subscriptions) {
      if (!subscription.push(event, this.maxQueue)) {
        subscription.end(new ConnectError("invalidation stream fell behind; reconnect and resync", Code.ResourceExhausted));
      }
    }
  }

  /**
   * Follows the instance's own listener: while it is down events may be missed,
   * so every stream ends and new ones are refused until it is back.
   */
  setListening(listening: boolean): void {
    this.listening = listening;
    if (!listening) this.endAll(new ConnectError("invalidation listener down; reconnect and resync", Code.Unavailable));
  }

  /** Opens a subscription that ends when `signal` aborts; unavailable while not listening. */
  subscribe(signal: AbortSignal): Subscription {
    if (!this.listening) {
      throw new ConnectError("invalidation listener down; retry shortly", Code.Unavailable);
    }
    const subscription = new Subscription(() => this.subscriptions.delete(subscription));
    this.subscriptions.add(subscription);
    if (signal.aborted) subscription.end(abortError(signal));
    else signal.addEventListener("abort", () => subscription.end(abortError(signal)), { once: true });
    return subscription;
  }

  /** Ends every stream, e.g. at shutdown, so clients reconnect elsewhere at once. */
  close(): void {
    this.listening = false;
    this.endAll(new ConnectError("server shutting down; reconnect and resync", Code.Unavailable));
  }

  private endAll(error: ConnectError): void {
    for (const subscription of [...this.subscriptions]) subscription.end(error);
  }
}

/**
 * Why a stream's signal aborted: Connect aborts it with deadline_exceeded when the
 * call's deadline passes, which the client must see as such; anything else is the
 * client going away.
 */
export function abortError(signal: AbortSignal): ConnectError {
  return signal.reason instanceof ConnectError ? signal.reason : new ConnectError("stream cancelled", Code.Canceled);
}

/** One subscriber's bounded queue of events. */
export class Subscription {
  private readonly queue: Invalidation[] = [];
  private error: ConnectError | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly onEnd: () => void) {}

  /** Queues an event; false when the queue is full. */
  push(event: Invalidation, maxQueue: number): boolean {
    if (this.error !== undefined) return true;
    if (this.queue.length >= maxQueue) return false;
    this.queue.push(event);
    this.wake?.();
    return true;
  }

  /** Ends the subscription: `next` throws `error` from now on. */
  end(error: ConnectError): void {
    if (this.error !== undefined) return;
    this.error = error;
    // Queued events are dropped: the client must resync after reconnecting anyway.
    this.queue.length = 0;
    this.onEnd();
    this.wake?.();
  }

  /** The next event, or undefined after `idleMs` without one; throws once ended. */
  async next(idleMs: number): Promise<Invalidation | undefined> {
    for (;;) {
      if (this.error !== undefined) throw this.error;
      const event = this.queue.shift();
      if (event !== undefined) return event;
      let timer: NodeJS.Timeout | undefined;
      const woken = await new Promise<boolean>((resolve) => {
        this.wake = () => resolve(true);
        timer = setTimeout(() => resolve(false), idleMs);
      });
      clearTimeout(timer);
      this.wake = undefined;
      if (!woken && this.error === undefined && this.queue.length === 0) return undefined;
    }
  }
}
