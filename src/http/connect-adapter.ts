import { createConnectRouter } from "@connectrpc/connect";
import {
  type ConnectNodeAdapterOptions,
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { clampDeadline } from "./deadlines.js";
import type { RequestHandler } from "./handler.js";
import { linearRequestBody } from "./request-body.js";
import { STRICT_JSON_OPTIONS } from "./strict-json.js";

/**
 * `connectNodeAdapter`, except that JSON is read strictly (STRICT_JSON_OPTIONS),
 * request bodies are read in linear time (see linearRequestBody) and over-long
 * deadlines are clamped (see clampDeadline). Pass `errorHook` so that errors the
 * protocol raises before any interceptor runs get the service's error mapping.
 */
export function connectAdapter(options: ConnectNodeAdapterOptions): RequestHandler {
  const router = createConnectRouter({
    ...options,
    acceptCompression: options.acceptCompression ?? [compressionGzip, compressionBrotli],
    jsonOptions: { ...STRICT_JSON_OPTIONS, ...options.jsonOptions },
  });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [(options.requestPathPrefix ?? "") + h.requestPath, h]));
  return function nodeRequestHandler(req, res) {
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
    uReq.body = linearRequestBody(req, handler.method, options.readMaxBytes ?? Number.MAX_SAFE_INTEGER);
    clampDeadline(uReq.header);
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch(() => {
        // Handlers turn their errors into responses; what fails here is writing to a client that went away.
      });
  };
}
