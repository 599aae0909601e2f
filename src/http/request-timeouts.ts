import http2 from "node:http2";

/** A watched stream's place in `RequestTimeouts`' list. */
interface Watched {
  stream: WatchedStream | undefined;
  opened: number;
  prev: Watched | undefined;
  next: Watched | undefined;
}

const watchedEntry = Symbol("apikeys.requestTimeoutEntry");
type WatchedStream = http2.ServerHttp2Stream & { [watchedEntry]?: Watched };

/**
 * Resets streams whose request body is not complete `timeoutMs` after they
 * opened, as `withRequestTimeout` (listener.ts) does, with one sweeping timer for all of them
 * instead of a timer and two listeners per stream; a stream is reset at most a
 * tenth of the timeout (and no more than a second) late.
 *
 * A stream leaves when its body ends (one shared listener), not at the next
 * sweep: held until then, every served stream outlived two young-generation
 * collections and was copied into the old generation. The streams are kept in
 * a linked list whose node is emptied when its stream leaves, not in a `Map`:
 * a long-lived `Map` whose entries come and go is rehashed into new tables, and
 * what the tables it leaves behind pointed at survived young-generation
 * collections until a full one (under 4×10 gRPC load: 16–19 ms scavenges
 * instead of 4, the heap growing ~30 MB/s between full collections).
 */
export class RequestTimeouts {
  /** Oldest first: insertion order is deadline order. */
  private head: Watched | undefined;
  private tail: Watched | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly every: number;
  /** The "end" listener of every watched stream (`this` is the stream). */
  private readonly ended: (this: WatchedStream) => void;

  constructor(private readonly timeoutMs: number) {
    this.every = Math.max(10, Math.min(1_000, Math.floor(timeoutMs / 10)));
    const timeouts = this;
    this.ended = function (this: WatchedStream) {
      const entry = this[watchedEntry];
      if (entry !== undefined) timeouts.remove(entry);
    };
  }

  watch(stream: WatchedStream): void {
    if (stream.readableEnded) return;
    const entry: Watched = { stream, opened: Date.now(), prev: this.tail, next: undefined };
    if (this.tail === undefined) this.head = entry;
    else this.tail.next = entry;
    this.tail = entry;
    stream[watchedEntry] = entry;
    stream.on("end", this.ended);
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.sweep(), this.every);
      this.timer.unref();
    }
  }

  private remove(entry: Watched): void {
    const stream = entry.stream;
    if (stream === undefined) return;
    stream[watchedEntry] = undefined;
    if (entry.prev === undefined) this.head = entry.next;
    else entry.prev.next = entry.next;
    if (entry.next === undefined) this.tail = entry.prev;
    else entry.next.prev = entry.prev;
    entry.stream = entry.prev = entry.next = undefined;
  }

  private sweep(): void {
    const expired = Date.now() - this.timeoutMs;
    for (let entry = this.head; entry !== undefined; ) {
      const next = entry.next;
      const stream = entry.stream!;
      if (stream.readableEnded || stream.destroyed) this.remove(entry);
      else if (entry.opened <= expired) {
        this.remove(entry);
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }
      entry = next;
    }
    if (this.head === undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
