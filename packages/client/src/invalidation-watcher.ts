import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { type ApiKeysService, InvalidationKind } from "./gen/apikeys/v1/api_keys_pb.js";
import { delay } from "./clients.js";

/** What the watcher tells its owner. */
export interface WatchHandlers {
  /** A stream (re)started: anything cached before may be stale. */
  onResync(): void;
  onInvalidation(kind: "key" | "policy", id: string): void;
  /** The stream ended or could not be opened; evictions stop arriving until the next resync. */
  onDisconnect(error: ConnectError): void;
}

export interface WatchOptions {
  /** First reconnect delay; doubles per failed attempt. Default 100 ms. */
  minBackoffMs?: number;
  /** Longest reconnect delay. Default 5 s. */
  maxBackoffMs?: number;
}

/** Heartbeat intervals a stream may stay silent before it counts as dead. */
const MISSED_HEARTBEATS = 3;

/**
 * Keeps one WatchInvalidations stream open, reconnecting with capped
 * exponential backoff (with jitter, so a restarted server is not stampeded).
 */
export class InvalidationWatcher {
  private closed = false;
  private abort: AbortController | undefined;
  private wake: AbortController | undefined;
  private live = false;
  private readonly done: Promise<void>;

  constructor(
    private readonly client: Client<typeof ApiKeysService>,
    private readonly handlers: WatchHandlers,
    private readonly options: WatchOptions = {},
  ) {
    this.done = this.run();
  }

  /** True between a resync and the loss of its stream. */
  get connected(): boolean {
    return this.live;
  }

  /** Stops watching and waits for the stream to end. */
  async close(): Promise<void> {
    this.closed = true;
    this.abort?.abort();
    this.wake?.abort();
    await this.done;
  }

  private async run(): Promise<void> {
    const min = this.options.minBackoffMs ?? 100;
    const max = this.options.maxBackoffMs ?? 5_000;
    for (let failures = 0; !this.closed; ) {
      const error = await this.watchOnce();
      // A stream that got as far as its resync worked: start backing off afresh.
      failures = this.live ? 1 : failures + 1;
      this.live = false;
      if (this.closed) return;
      this.handlers.onDisconnect(error);
      const backoff = Math.min(max, min * 2 ** Math.min(failures - 1, 16));
      this.wake = new AbortController();
      await delay(backoff * (0.5 + Math.random() / 2), this.wake.signal);
    }
  }

  /** Runs one stream to its end and returns why it ended. */
  private async watchOnce(): Promise<ConnectError> {
    const abort = new AbortController();
    this.abort = abort;
    let watchdog: NodeJS.Timeout | undefined;
    let silenceMs = 0;
    const feed = () => {
      clearTimeout(watchdog);
      if (silenceMs > 0) {
        watchdog = setTimeout(() => abort.abort(new ConnectError("invalidation stream went silent", Code.DeadlineExceeded)), silenceMs);
        watchdog.unref();
      }
    };
    try {
      for await (const message of this.client.watchInvalidations({}, { signal: abort.signal, timeoutMs: 0 })) {
        const event = message.event;
        switch (event.case) {
          case "resync": {
            const interval = event.value.heartbeatInterval;
            silenceMs = interval === undefined ? 0 : durationMs(interval) * MISSED_HEARTBEATS;
            this.live = true;
            this.handlers.onResync();
            break;
          }
          case "invalidation":
            if (event.value.kind === InvalidationKind.KEY) this.handlers.onInvalidation("key", event.value.id);
            else if (event.value.kind === InvalidationKind.POLICY) this.handlers.onInvalidation("policy", event.value.id);
            // A kind this SDK does not know yet: only a full resync is safe.
            else this.handlers.onResync();
            break;
        }
        feed();
      }
      return new ConnectError("invalidation stream ended", Code.Unavailable);
    } catch (err) {
      if (abort.signal.reason instanceof ConnectError) return abort.signal.reason;
      return ConnectError.from(err);
    } finally {
      clearTimeout(watchdog);
      abort.abort();
    }
  }
}
