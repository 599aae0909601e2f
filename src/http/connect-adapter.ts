import { createConnectRouter } from "@connectrpc/connect";
import {
  type ConnectNodeAdapterOptions,
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { clampDeadline } from "./deadlines.js";
import { type NodeRequest, type NodeResponse, type RequestHandler, type StreamHandler, handedOnBody } from "./handler.js";
import { linearRequestBody } from "./request-body.js";
import { STRICT_JSON_OPTIONS } from "./strict-json.js";

/**
 * Something that may answer a request before connect does (the fast path). It
 * returns false to leave the request alone, or true once it has taken it; a
 * request it took may still be handed on with `generic`, with the body it read.
 */
export type FrontHandler = (req: NodeRequest, res: NodeResponse, generic: (collected: Promise<Buffer>) => void) => boolean;

/** What may stand in front of connect: for requests, and for HTTP/2 streams before node's compatibility layer. */
export interface Front {
  request?: FrontHandler;
  stream?: StreamHandler;
}

/**
 * `connectNodeAdapter`, except that JSON is read strictly (STRICT_JSON_OPTIONS),
 * request bodies are read in linear time (see linearRequestBody) and over-long
 * deadlines are clamped (see clampDeadline). Pass `errorHook` so that errors the
 * protocol raises before any interceptor runs get the service's error mapping.
 * `front` is built from the options as connect sees them (compression, JSON options);
 * its stream handler becomes the returned handler's `stream`.
 */
export function connectAdapter(options: ConnectNodeAdapterOptions, front?: (resolved: ConnectNodeAdapterOptions) => Front | undefined): RequestHandler {
  const resolved: ConnectNodeAdapterOptions = {
    ...options,
    acceptCompression: options.acceptCompression ?? [compressionGzip, compressionBrotli],
    jsonOptions: { ...STRICT_JSON_OPTIONS, ...options.jsonOptions },
  };
  const router = createConnectRouter(resolved);
  options.routes(router);
  const { request: frontHandler, stream } = front?.(resolved) ?? {};
  const paths = new Map(router.handlers.map((h) => [(options.requestPathPrefix ?? "") + h.requestPath, h]));
  const generic = (req: NodeRequest, res: NodeResponse, collected?: Promise<Buffer>) => {
    const handler = paths.get(req.url?.split("?", 2)[0] ?? "");
    if (handler === undefined) {
      if (options.fallback) options.fallback(req, res);
      else {
        res.writeHead(404);
        res.end();
      }
      return;
    }
    const uReq = universalRequestFromNodeRequest(req, res, undefined, options.contextValues?.(req));
    uReq.body = linearRequestBody(req, handler.method, options.readMaxBytes ?? Number.MAX_SAFE_INTEGER, collected);
    clampDeadline(uReq.header);
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch(() => {
        // Handlers turn their errors into responses; what fails here is writing to a client that went away.
      });
  };
  const handler: RequestHandler = function nodeRequestHandler(req, res) {
    // A stream the stream handler read and handed on.
    const collected = "stream" in req ? handedOnBody.get(req.stream) : undefined;
    if (collected !== undefined) return generic(req, res, collected);
    if (frontHandler?.(req, res, (collected) => generic(req, res, collected))) return;
    generic(req, res);
  };
  if (stream !== undefined) handler.stream = stream;
  return handler;
}
