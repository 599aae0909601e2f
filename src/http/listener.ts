import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { ConnectionLimits } from "../config.js";
import { type StreamHandler, handedOnBody } from "./handler.js";
import { RequestTimeouts } from "./request-timeouts.js";

type Handler = ((req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void) & { stream?: StreamHandler };

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * A response to a request whose body was not read to its end (e.g. over
 * readMaxBytes) leaves the rest of the body on the wire: it answers with
 * "Connection: close" so no client reuses the connection. (Implicit headers go
 * through writeHead too.)
 */
class CloseUnreadResponse extends http.ServerResponse {}
const baseWriteHead = http.ServerResponse.prototype.writeHead;
CloseUnreadResponse.prototype.writeHead = function (this: CloseUnreadResponse, ...args: unknown[]) {
  if (!this.req.complete) this.shouldKeepAlive = false;
  return (baseWriteHead as (...a: unknown[]) => CloseUnreadResponse).apply(this, args);
} as http.ServerResponse["writeHead"];

/** A listening port that speaks HTTP/1.1 and cleartext HTTP/2 (prior knowledge). */
export interface Listener {
  port: number;
  /** Stops accepting, lets in-flight requests finish within `graceMs`, then closes the rest. */
  close(graceMs: number): Promise<void>;
}

/** Serves `handler` on one port, routing each connection by its first bytes. */
export async function listen(handler: Handler, port: number, host: string | undefined, limits: ConnectionLimits): Promise<Listener> {
  let closing = false;
  const guarded = withValidAuthority(withRequestTimeout(handler, limits.requestTimeoutMs));
  // In-flight requests per HTTP/1.1 socket, so closing can end idle keep-alive sockets at once.
  const inFlight = new Map<net.Socket, number>();
  const h1 = http.createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // Timeouts are enforced at most this late.
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 4))),
      ServerResponse: CloseUnreadResponse,
    },
    (req, res) => {
      const socket = req.socket;
      inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
      if (closing) res.setHeader("connection", "close");
      res.once("close", () => {
        const left = (inFlight.get(socket) ?? 1) - 1;
        inFlight.set(socket, left);
        if (closing && left === 0) socket.destroySoon();
      });
      (guarded as http.RequestListener)(req, res);
    },
  );
  h1.keepAliveTimeout = limits.keepAliveTimeoutMs;
  // Node starts the checker behind headersTimeout and requestTimeout when a server emits "listening".
  // This one never listens itself (the sniffer hands it its sockets), so start the checker the same way.
  h1.emit("listening");
  const h2 = http2.createServer({}, guarded as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
  if (handler.stream !== undefined) frontStreams(h2, handler.stream, limits.requestTimeoutMs);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    closeWhenIdle(session, limits.h2IdleTimeoutMs);
    session.once("close", () => sessions.delete(session));
  });

  const perAddress = new Map<string, number>();
  const server = net.createServer({ noDelay: true }, (socket) => {
    const address = socket.remoteAddress ?? "";
    const open = perAddress.get(address) ?? 0;
    if (limits.maxConnectionsPerAddress > 0 && open >= limits.maxConnectionsPerAddress) {
      socket.destroy();
      return;
    }
    perAddress.set(address, open + 1);
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left === 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
    socket.once("error", () => socket.destroy());
    sniff(socket, limits.sniffTimeoutMs, (isH2) => {
      if (isH2) {
        // The http2 session reads what is buffered on the socket itself (on next tick).
        h2.emit("connection", socket);
      } else {
        inFlight.set(socket, 0);
        socket.once("close", () => inFlight.delete(socket));
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;

  return {
    port: address.port,
    async close(graceMs) {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Stops h1's timeout checker (it reports "not running", which is expected here).
      h1.close(() => {});
      for (const [socket, count] of inFlight) if (count === 0) socket.destroySoon();
      for (const session of sessions) session.close();
      const deadline = setTimeout(() => {
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
      }, graceMs);
      deadline.unref();
      await closed;
      clearTimeout(deadline);
    },
  };
}

/**
 * Reads a new connection's first bytes until they either diverge from the HTTP/2
 * preface (HTTP/1.1) or complete it (HTTP/2), then puts them back and calls
 * `decided` with the socket paused. A connection undecided after `timeoutMs` is closed.
 */
function sniff(socket: net.Socket, timeoutMs: number, decided: (isH2: boolean) => void): void {
  const seen: Buffer[] = [];
  let length = 0;
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  const onData = (chunk: Buffer) => {
    seen.push(chunk);
    length += chunk.length;
    const first = seen.length === 1 ? chunk : Buffer.concat(seen, length);
    const n = Math.min(first.length, H2_PREFACE.length);
    const matches = first.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && n < H2_PREFACE.length) return;
    clearTimeout(timer);
    socket.off("data", onData);
    socket.off("close", onClose);
    socket.pause();
    socket.unshift(first);
    decided(matches);
  };
  const onClose = () => clearTimeout(timer);
  socket.on("data", onData);
  socket.once("close", onClose);
}

/** Closes an HTTP/2 session gracefully once it has had no open stream for `idleMs`. */
function closeWhenIdle(session: http2.Http2Session, idleMs: number): void {
  let open = 0;
  // One timer per session, restarted (refresh) whenever the session goes idle rather than made anew per stream.
  const timer = setTimeout(() => {
    if (open === 0) session.close();
  }, idleMs);
  // One "close" listener per session for all its streams (a stream closes once), not a closure and a once-wrapper per stream.
  const closed = () => {
    if (--open === 0 && !session.closed) timer.refresh();
  };
  session.on("stream", (stream: http2.Http2Stream) => {
    open++;
    stream.on("close", closed);
  });
  session.once("close", () => clearTimeout(timer));
}

/**
 * Puts `front` before node's compatibility layer: node registers that layer as the
 * server's "stream" listener when a request listener is given; here it is taken
 * off and called only for the streams `front` leaves (or hands on). Streams `front`
 * takes get the request timeout of `withRequestTimeout`.
 */
function frontStreams(h2: http2.Http2Server, front: StreamHandler, requestTimeoutMs: number): void {
  const listeners = h2.listeners("stream");
  if (listeners.length !== 1) throw new Error(`expected node's one compatibility "stream" listener, found ${listeners.length}`);
  const compat = listeners[0] as (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;
  h2.removeListener("stream", compat);
  const timeouts = requestTimeoutMs > 0 ? new RequestTimeouts(requestTimeoutMs) : undefined;
  h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
    const taken = front(stream, headers, (collected) => {
      handedOnBody.set(stream, collected);
      compat(stream, headers, flags, rawHeaders);
    });
    if (!taken) return compat(stream, headers, flags, rawHeaders);
    timeouts?.watch(stream);
  });
}

/**
 * HTTP/2 streams get the request timeout that the HTTP/1.1 server enforces itself:
 * a request whose body is not complete in time is reset.
 */
function withRequestTimeout(handler: Handler, timeoutMs: number): Handler {
  if (timeoutMs === 0) return handler;
  return (req, res) => {
    if ("stream" in req && !req.complete) {
      const stream = req.stream;
      const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), timeoutMs);
      const done = () => clearTimeout(timer);
      req.once("end", done);
      stream.once("close", done);
    }
    handler(req, res);
  };
}

/** host or IP-literal with an optional port (RFC 3986 authority without userinfo). */
const AUTHORITY = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(:[0-9]{0,5})?$/;

/** Authorities seen valid (clients send one or a few), so that most requests parse no URL. Bounded, since clients choose them. */
const validAuthorities = new Set<string>();

export function isValidAuthority(authority: string | undefined): authority is string {
  if (authority === undefined) return false;
  if (validAuthorities.has(authority)) return true;
  if (!AUTHORITY.test(authority) || !URL.canParse(`http://${authority}/`)) return false;
  if (validAuthorities.size >= 256) validAuthorities.clear();
  validAuthorities.add(authority);
  return true;
}

/**
 * Requests whose Host (HTTP/1.1) or :authority (HTTP/2) is missing or not an
 * authority are refused with invalid_argument before any route sees them: every
 * layer below builds a URL from it.
 */
function withValidAuthority(handler: Handler): Handler {
  return (req, res) => {
    const authority = "authority" in req ? req.authority : req.headers.host;
    if (isValidAuthority(authority)) {
      handler(req, res);
      return;
    }
    const message = authority === undefined ? "missing Host header" : "Host header is not a valid authority";
    const contentType = req.headers["content-type"] ?? "";
    if (contentType.startsWith("application/grpc")) {
      // gRPC and gRPC-Web: a trailers-only response.
      res.writeHead(200, { "content-type": contentType, "grpc-status": "3", "grpc-message": encodeURIComponent(message) });
      res.end();
      return;
    }
    // Connect clients read a string code; REST clients the numeric google.rpc.Status code.
    const isConnect = req.headers["connect-protocol-version"] !== undefined || contentType.startsWith("application/connect+");
    const body = JSON.stringify(isConnect ? { code: "invalid_argument", message } : { code: 3, message, details: [] });
    if (!("stream" in req)) (res as http.ServerResponse).shouldKeepAlive = false;
    res.writeHead(400, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
    res.end(body);
  };
}
