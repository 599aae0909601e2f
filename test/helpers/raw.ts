import http2 from "node:http2";
import net from "node:net";

/** What a raw HTTP/1.1 exchange got back: the status line's code, headers and body as text. */
export interface RawResponse {
  status: number;
  head: string;
  body: string;
}

/** Opens a plain TCP connection to the test server (optionally from another loopback address). */
export function connectRaw(port: number, localAddress?: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", localAddress }, () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Resolves with everything the server sent once it closed the connection; rejects after `timeoutMs`. */
export function readUntilClosed(socket: net.Socket, timeoutMs = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`server did not close the connection within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    socket.on("error", () => {});
  });
}

/** Sends `parts` in order (with `gapMs` between them) on a fresh connection and reads the answer until the server closes. */
export async function rawHttp(port: number, parts: Array<string | Buffer>, gapMs = 0): Promise<RawResponse> {
  const socket = await connectRaw(port);
  const answer = readUntilClosed(socket);
  for (const [i, part] of parts.entries()) {
    if (i > 0 && gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    socket.write(part);
  }
  return parseResponse((await answer).toString("latin1"));
}

/** Splits the first HTTP/1.1 response of `text` into status, head and (de-chunked) body. */
export function parseResponse(text: string): RawResponse {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`no HTTP response in ${JSON.stringify(text.slice(0, 200))}`);
  const head = text.slice(0, end);
  let body = text.slice(end + 4);
  if (/^transfer-encoding:\s*chunked/im.test(head)) {
    let out = "";
    for (;;) {
      const lineEnd = body.indexOf("\r\n");
      const size = parseInt(body.slice(0, lineEnd), 16);
      if (!(size > 0)) break;
      out += body.slice(lineEnd + 2, lineEnd + 2 + size);
      body = body.slice(lineEnd + 2 + size + 2);
    }
    body = out;
  }
  return { status: Number(head.split(" ")[1]), head, body };
}

/** One HTTP/2 request on `session`: status, headers (trailers merged in) and body. */
export function h2Request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Uint8Array,
): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers);
    const chunks: Buffer[] = [];
    const received: Record<string, string> = {};
    let status = 0;
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      for (const [k, v] of Object.entries(h)) received[k] = String(v);
    });
    stream.on("trailers", (h) => {
      for (const [k, v] of Object.entries(h)) received[k] = String(v);
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => resolve({ status, headers: received, body: Buffer.concat(chunks) }));
    stream.on("error", reject);
    stream.end(body);
  });
}

/** A gRPC / gRPC-Web / Connect-streaming envelope around `message`. */
export function envelope(message: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = flags;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/** `body` as an HTTP/1.1 chunked body of `chunkSize`-byte chunks, terminator included. */
export function chunked(body: Buffer, chunkSize: number): Buffer {
  const parts: Buffer[] = [];
  for (let offset = 0; offset < body.length; offset += chunkSize) {
    const piece = body.subarray(offset, offset + chunkSize);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n"));
  }
  parts.push(Buffer.from("0\r\n\r\n"));
  return Buffer.concat(parts);
}
