import type { IncomingHttpHeaders, ServerResponse } from "node:http";
import type { ServerHttp2Stream } from "node:http2";
import { type DescMethod, type Message, create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { clampDeadline } from "../deadlines.js";
import type { NodeResponse } from "../handler.js";

/** An answer as it goes on the wire (headers without :status; trailers only for gRPC). */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
  trailers: Record<string, string> | undefined;
}

export function writeH1(res: NodeResponse, a: Answer): void {
  if (res.destroyed) return;
  (res as ServerResponse).writeHead(a.status, a.headers);
  res.end(a.body);
}

/** HTTP/1.1 answers made in this turn of the event loop, as response, answer, response, answer, … */
let pendingH1: (NodeResponse | Answer)[] = [];

function flushH1(): void {
  const batch = pendingH1;
  pendingH1 = [];
  for (let i = 0; i < batch.length; i += 2) {
    const res = batch[i] as NodeResponse;
    try {
      writeH1(res, batch[i + 1] as Answer);
    } catch (err) {
      res.destroy(err as Error);
    }
  }
}

/**
 * `writeH1` in this turn's check phase, with every other answer made in the turn:
 * what node's HTTP/2 does with a session's frames. Under load, the answers to many
 * connections then leave back to back, and a client process on this host is woken
 * once for them rather than once per answer (the wake-up is paid by the writer's
 * `writev`); an answer waits at most for the rest of the turn's requests.
 */
export function writeH1Soon(res: NodeResponse, a: Answer): void {
  if (pendingH1.length === 0) setImmediate(flushH1);
  pendingH1.push(res, a);
}

/**
 * gRPC answers end with trailers. Connect's unary answers have none: their stream
 * ends once the body is written, in an empty DATA frame. Ended with the body itself
 * (`end(body)`, END_STREAM on the body's frame), the stream closes before node runs
 * the body's write callback, and node 20's Writable then builds an
 * ERR_STREAM_DESTROYED error, stack trace and all, for every answer (`errorBuffer`
 * makes it whether or not anyone listens): 10–20 % of a warm Connect call over h2c.
 */
export function writeH2(stream: ServerHttp2Stream, a: Answer): void {
  if (stream.destroyed || stream.closed) return;
  const trailers = a.trailers;
  try {
    stream.respond({ ":status": a.status, ...a.headers }, { waitForTrailers: trailers !== undefined });
  } catch {
    // The client reset the stream while the call ran.
    return;
  }
  if (trailers !== undefined) {
    stream.once("wantTrailers", () => stream.sendTrailers(trailers));
    if (a.body.byteLength > 0) stream.end(a.body);
    else stream.end();
  } else if (a.body.byteLength > 0) {
    // A failed write has destroyed the stream.
    stream.write(a.body, (err) => err == null && stream.end());
  } else {
    stream.end();
  }
}

/** What connect makes of an implementation's answer (a message, or the fields of one). */
export function normalize(method: DescMethod, output: unknown): Message {
  const message = output as Message;
  return message.$typeName === method.output.typeName ? message : create(method.output, output as never);
}

/** One request header as `Headers.get` returns it: values trimmed of HTTP whitespace, repeats joined. */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | null {
  const value = headers[name];
  if (value === undefined) return null;
  if (typeof value === "string") return trimHttpWhitespace(value);
  return value.map(trimHttpWhitespace).join(", ");
}

const HTTP_WHITESPACE = /^[\t\n\r ]+|[\t\n\r ]+$/g;

export function trimHttpWhitespace(value: string): string {
  if (value.length === 0) return value;
  const first = value.charCodeAt(0);
  const last = value.charCodeAt(value.length - 1);
  return isHttpWhitespace(first) || isHttpWhitespace(last) ? value.replace(HTTP_WHITESPACE, "") : value;
}

function isHttpWhitespace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/** The one message of an identity-encoded body: gRPC's single uncompressed envelope, Connect's whole body. */
export function messageBytes(body: Buffer, enveloped: boolean): Uint8Array | undefined {
  if (!enveloped) return body;
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return undefined;
  return body.subarray(5);
}

export function envelope(data: Uint8Array, flags: number): Uint8Array {
  const out = Buffer.allocUnsafe(5 + data.byteLength);
  out[0] = flags;
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, 5);
  return out;
}

/** A header value as one string, as Headers.get returns it (null when absent). */
export function single(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return typeof value === "string" ? value : value.join(", ");
}

/** The timeout header's value after clampDeadline, as connect reads it. */
export function clampedHeader(value: string | string[] | undefined, name: string): string | null {
  const raw = single(value);
  if (raw === null) return null;
  const header = new Headers({ [name]: raw });
  clampDeadline(header);
  return header.get(name);
}

/** Headers as Node's writeHead takes them, the way connect-node converts them. */
export function nodeHeaders(headers: Headers): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  headers.forEach((value, key) => {
    out[key] = value;
  });
  return out;
}

/** What connect sends for an error when no errorHook is set. */
export function connectErrorOf(e: unknown): ConnectError {
  return e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
}
