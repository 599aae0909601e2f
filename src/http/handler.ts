import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";

type NodeHandler = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
export type NodeRequest = Parameters<NodeHandler>[0];
export type NodeResponse = Parameters<NodeHandler>[1];

/**
 * A plain-HTTP handler for what is not an RPC (REST, static files, probes):
 * resolves true when it answered the request, false to pass it on.
 */
export type HttpHandler = (req: NodeRequest, res: NodeResponse) => boolean | Promise<boolean>;

/**
 * Takes an HTTP/2 stream before node builds its compatibility request and
 * response for it (the fast path): returns false to leave it to the request
 * handler, true once it has taken it. A stream it took may still be handed to the
 * request handler with `handOn`, with the body it read (see `handedOnBody`).
 */
export type StreamHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, handOn: (collected: Promise<Buffer>) => void) => boolean;

/** A listener's request handler (what `listen` serves), with an optional stream-level front for HTTP/2. */
export type RequestHandler = ((req: NodeRequest, res: NodeResponse) => void) & { stream?: StreamHandler };

/** The bodies of HTTP/2 streams a StreamHandler read and handed on, for the request handler to use instead of reading. */
export const handedOnBody = new WeakMap<ServerHttp2Stream, Promise<Buffer>>();

/** Tries each handler in order; a request none of them answers gets a 404 in the Connect error shape. */
export function httpFallback(handlers: readonly HttpHandler[]): RequestHandler {
  return (req, res) => {
    void (async () => {
      for (const h of handlers) if (await h(req, res)) return;
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ code: 5, message: `no route for ${req.method} ${req.url?.split("?")[0]}`, details: [] }));
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ code: 13, message: "internal error", details: [] }));
    });
  };
}

/** A port's handler that answers 503 until the service behind it is ready, then serves it. */
export class DeferredHandler {
  private target: RequestHandler | undefined;

  readonly handle: RequestHandler = Object.assign(
    (req: NodeRequest, res: NodeResponse) => {
      if (this.target !== undefined) return this.target(req, res);
      const body = JSON.stringify({ code: 14, message: "apikeys is starting; retry shortly", details: [] });
      res.writeHead(503, { "content-type": "application/json", "retry-after": "1", "content-length": String(Buffer.byteLength(body)) });
      res.end(body);
    },
    { stream: ((stream, headers, handOn) => this.target?.stream?.(stream, headers, handOn) ?? false) satisfies StreamHandler },
  );

  serve(target: RequestHandler): void {
    this.target = target;
  }
}
