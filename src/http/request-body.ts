import type http from "node:http";
import type http2 from "node:http2";
import type { Readable } from "node:stream";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;

const ENVELOPE_HEADER_BYTES = 5;

/**
 * The request body as connect should see it, read in linear time.
 *
 * connect reassembles a body from the chunks it is given in time quadratic in their
 * number (`readAllBytes` and its envelope decoder shift and re-sum a chunk list), so
 * a body sent as many tiny chunks stalls the event loop before authentication. Here
 * a single-message request (unary, server-streaming) is collected once into one
 * chunk; a streaming request is re-cut into whole envelopes, one chunk each. Reading
 * stops a little past `maxBytes`, so connect still refuses an oversized body with
 * its own resource_exhausted. `collected` is a single-message body already read by
 * `collectRequestBody` with the same limit (the fast path's, when it hands a request on).
 */
export function linearRequestBody(req: NodeRequest, method: DescMethod, maxBytes: number, collected?: Promise<Buffer>): AsyncIterable<Uint8Array> {
  const enveloped = !isConnectUnary(req, method);
  const checkFlags = enveloped && !declaresEncoding(req) ? refuseCompressedFlag : () => {};
  if (method.methodKind === "unary" || method.methodKind === "server_streaming") {
    const limit = singleMessageLimit(enveloped, maxBytes);
    return (async function* () {
      const body = await (collected ?? collectRequestBody(req, limit));
      if (body.length > 0) checkFlags(body[0]!);
      if (body.length > 0) yield body;
    })();
  }
  return wholeEnvelopes(req, maxBytes, checkFlags);
}

const COMPRESSED_FLAG = 0x01;

/** Whether the request names a message encoding (gRPC, gRPC-Web: grpc-encoding; Connect streaming: connect-content-encoding). */
function declaresEncoding(req: NodeRequest): boolean {
  const encoding = req.headers["grpc-encoding"] ?? req.headers["connect-content-encoding"];
  return encoding !== undefined && encoding !== "identity";
}

/**
 * A compressed envelope without a declared encoding is the client's mistake. connect
 * raises it as `internal` where interceptors see it (streaming requests), so logs and
 * metrics would count a server fault while the client is told invalid_argument.
 */
function refuseCompressedFlag(flags: number): void {
  if ((flags & COMPRESSED_FLAG) === COMPRESSED_FLAG) {
    throw new ConnectError("received compressed envelope, but the request names no message encoding", Code.InvalidArgument);
  }
}

/** Connect's unary protocol sends a bare message; every other protocol envelopes it. */
function isConnectUnary(req: NodeRequest, method: DescMethod): boolean {
  const contentType = req.headers["content-type"] ?? "";
  return method.methodKind === "unary" && !contentType.startsWith("application/grpc") && !contentType.startsWith("application/connect+");
}

/** The largest body `linearRequestBody` reads for a single-message request of this kind before letting connect refuse it. */
export function singleMessageLimit(enveloped: boolean, maxBytes: number): number {
  return maxBytes + (enveloped ? ENVELOPE_HEADER_BYTES : 0);
}

/**
 * The whole body as one buffer, or its first `limit + 1` bytes when it is longer.
 * Chunks are copied into one growing buffer as they arrive, so a million 1-byte
 * chunks are not kept alive as a million buffer objects.
 */
export function collectRequestBody(req: Readable, limit: number, contentLength = (req as NodeRequest).headers?.["content-length"]): Promise<Buffer> {
  return new Promise((resolve, reject) => readRequestBody(req, limit, contentLength, (body, err) => (body === undefined ? reject(err) : resolve(body))));
}

/**
 * `collectRequestBody` with a callback, for the fast path: `done` gets the body,
 * or undefined and why when the request failed or closed before its body ended.
 * A body that arrives as one chunk is passed on without a copy. One reader per
 * request: the reader is kept on the request, so a second call would take the
 * first one's place under both sets of listeners.
 */
export function readRequestBody(req: Readable, limit: number, contentLength: string | undefined, done: (body: Buffer | undefined, err?: unknown) => void): void {
  (req as ReadingRequest)[bodyReader] = new BodyReader(limit, contentLength, done);
  // The same four module functions for every request, not four closures each (they find the reader through
  // the request); they stay on the request once it is done (it ends or closes then), `finished` making them inert.
  req.on("data", onBodyData);
  req.on("end", onBodyEnd);
  req.on("error", onBodyError);
  req.on("close", onBodyClose);
}

const bodyReader = Symbol("apikeys.bodyReader");
type ReadingRequest = Readable & { [bodyReader]?: BodyReader };

/** What `readRequestBody` has read of one request. */
class BodyReader {
  first: Buffer | undefined = undefined;
  buffer: Buffer | undefined = undefined;
  length = 0;
  finished = false;
  constructor(
    readonly limit: number,
    readonly contentLength: string | undefined,
    readonly done: (body: Buffer | undefined, err?: unknown) => void,
  ) {}

  data(req: Readable, chunk: Buffer): void {
    const { limit, length } = this;
    const take = Math.min(chunk.length, limit + 1 - length);
    if (this.first === undefined && this.buffer === undefined && take === chunk.length) {
      this.first = chunk;
    } else {
      let buffer = this.buffer;
      if (buffer === undefined) {
        const declared = Number(this.contentLength);
        const size = Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, limit + 1) : 16 * 1024;
        buffer = Buffer.allocUnsafe(Math.max(size, length + take));
        if (this.first !== undefined) this.first.copy(buffer, 0, 0, length);
        this.first = undefined;
      } else if (length + take > buffer.length) {
        const grown = Buffer.allocUnsafe(Math.min(Math.max(buffer.length * 2, length + take), limit + 1));
        buffer.copy(grown, 0, 0, length);
        buffer = grown;
      }
      chunk.copy(buffer, length, 0, take);
      this.buffer = buffer;
    }
    this.length = length + take;
    if (this.length > limit) {
      this.finished = true;
      req.pause();
      this.done(bodyOf(this.first, this.buffer, this.length));
    }
  }

  end(): void {
    this.finished = true;
    this.done(bodyOf(this.first, this.buffer, this.length));
  }

  fail(err: unknown): void {
    this.finished = true;
    this.done(undefined, err);
  }
}

function onBodyData(this: ReadingRequest, chunk: Buffer): void {
  const reader = this[bodyReader];
  if (reader !== undefined && !reader.finished) reader.data(this, chunk);
}

function onBodyEnd(this: ReadingRequest): void {
  const reader = this[bodyReader];
  if (reader !== undefined && !reader.finished) reader.end();
}

function onBodyError(this: ReadingRequest, err: Error): void {
  const reader = this[bodyReader];
  if (reader !== undefined && !reader.finished) reader.fail(err);
}

function onBodyClose(this: ReadingRequest): void {
  const reader = this[bodyReader];
  if (reader !== undefined && !reader.finished) reader.fail(new ConnectError("request closed before its body was complete", Code.Canceled));
}

const EMPTY_BODY = Buffer.alloc(0);

/** What `readRequestBody` read: the one chunk as it came, else the bytes copied so far. */
function bodyOf(first: Buffer | undefined, buffer: Buffer | undefined, length: number): Buffer {
  return buffer !== undefined ? buffer.subarray(0, length) : (first ?? EMPTY_BODY);
}

/**
 * The body's envelopes, each as one chunk. Bytes are copied at most twice per
 * envelope (header, then whole), so any chunking costs linear time. An envelope
 * over `maxBytes` is passed on as soon as its header is known, for connect to refuse.
 */
async function* wholeEnvelopes(req: NodeRequest, maxBytes: number, checkFlags: (flags: number) => void): AsyncIterable<Uint8Array> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let need = ENVELOPE_HEADER_BYTES;
  let passThrough = false;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    if (passThrough) {
      yield chunk;
      continue;
    }
    pending.push(chunk);
    pendingBytes += chunk.length;
    while (pendingBytes >= need) {
      const buffered = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      pending = [buffered];
      if (need === ENVELOPE_HEADER_BYTES) {
        checkFlags(buffered[0]!);
        const length = buffered.readUInt32BE(1);
        if (length > maxBytes) {
          passThrough = true;
          pending = [];
          pendingBytes = 0;
          yield buffered;
          break;
        }
        need = ENVELOPE_HEADER_BYTES + length;
        if (pendingBytes < need) break;
      }
      yield buffered.subarray(0, need);
      const rest = buffered.subarray(need);
      pending = rest.length > 0 ? [rest] : [];
      pendingBytes = rest.length;
      need = ENVELOPE_HEADER_BYTES;
    }
  }
  // An incomplete envelope: connect reports it.
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}
