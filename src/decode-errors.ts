import { createConnectRouter } from "@connectrpc/connect";
import {
  type ConnectNodeAdapterOptions,
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import { clampDeadline } from "./deadlines.js";
import { linearRequestBody } from "./request-body.js";

/**
 * What @connectrpc/connect says when a request's bytes cannot be decoded (bad
 * protobuf binary, a compressed frame it cannot inflate). It answers those with
 * `internal` before any handler or interceptor runs, which would page an operator
 * for a client's mistake; they are `invalid_argument`.
 */
const DECODE_FAILURE = /^(parse binary: |decompression failed|received compressed envelope, but do not know how to decompress)/;

const GRPC_INTERNAL = "13";
const GRPC_INVALID_ARGUMENT = "3";
const TRAILER_FLAG = 0x80;
const END_STREAM_FLAG = 0x02;

function isDecodeFailure(grpcMessage: string | null): boolean {
  if (grpcMessage === null) return false;
  try {
    return DECODE_FAILURE.test(decodeURIComponent(grpcMessage));
  } catch {
    return false;
  }
}

/** Rewrites a gRPC status carried in headers or trailers. */
function fixGrpcStatus(headers: Headers | undefined): void {
  if (headers?.get("grpc-status") === GRPC_INTERNAL && isDecodeFailure(headers.get("grpc-message"))) {
    headers.set("grpc-status", GRPC_INVALID_ARGUMENT);
  }
}

/** Rewrites a Connect error object ({code, message}) in JSON text; undefined when there is nothing to fix. */
function fixConnectErrorJson(text: string, path: "top" | "error"): string | undefined {
  let value: { code?: string; message?: string; error?: { code?: string; message?: string } };
  try {
    value = JSON.parse(text) as typeof value;
  } catch {
    return undefined;
  }
  const error = path === "top" ? value : value.error;
  if (error?.code !== "internal" || !DECODE_FAILURE.test(error.message ?? "")) return undefined;
  error.code = "invalid_argument";
  return JSON.stringify(value);
}

/** Rewrites the status inside an enveloped frame: gRPC-Web trailers or a Connect end-stream message. */
function fixFrame(chunk: Uint8Array): Uint8Array {
  if (chunk.length < 5) return chunk;
  const flags = chunk[0]!;
  const length = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).readUInt32BE(1);
  if (length !== chunk.length - 5) return chunk;
  const text = Buffer.from(chunk.subarray(5)).toString("utf8");
  let fixed: string | undefined;
  if (flags === TRAILER_FLAG) {
    const headers = new Headers();
    for (const line of text.split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    if (headers.get("grpc-status") === GRPC_INTERNAL && isDecodeFailure(headers.get("grpc-message"))) {
      fixed = text.replace(/grpc-status:\s*13/, `grpc-status: ${GRPC_INVALID_ARGUMENT}`);
    }
  } else if ((flags & END_STREAM_FLAG) === END_STREAM_FLAG) {
    fixed = fixConnectErrorJson(text, "error");
  }
  if (fixed === undefined) return chunk;
  const data = Buffer.from(fixed, "utf8");
  const out = Buffer.alloc(5 + data.length);
  out[0] = flags;
  out.writeUInt32BE(data.length, 1);
  data.copy(out, 5);
  return out;
}

async function* fixBody(body: AsyncIterable<Uint8Array>, trailer: Headers | undefined): AsyncIterable<Uint8Array> {
  for await (const chunk of body) yield fixFrame(chunk);
  // gRPC trailers are complete once the body is; the node writer sends them after this.
  fixGrpcStatus(trailer);
}

async function fixResponse(res: UniversalServerResponse): Promise<UniversalServerResponse> {
  fixGrpcStatus(res.header);
  const contentType = res.header?.get("content-type") ?? "";
  if (res.status === 500 && contentType.startsWith("application/json") && res.body !== undefined) {
    // A Connect unary error: one small JSON body.
    const chunks: Uint8Array[] = [];
    for await (const chunk of res.body) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString("utf8");
    const fixed = fixConnectErrorJson(text, "top");
    const body = Buffer.from(fixed ?? text, "utf8");
    res.header?.delete("content-length");
    return {
      ...res,
      status: fixed === undefined ? res.status : 400,
      body: (async function* () {
        yield body;
      })(),
    };
  }
  return res.body === undefined ? res : { ...res, body: fixBody(res.body, res.trailer) };
}

/**
 * `connectNodeAdapter`, except that requests whose bytes cannot be decoded are
 * answered `invalid_argument` (HTTP 400 for Connect) instead of `internal`, and
 * that request bodies are read in linear time (see linearRequestBody) and
 * over-long deadlines clamped (see clampDeadline).
 */
export function connectNodeAdapterWithDecodeErrors(options: ConnectNodeAdapterOptions) {
  const router = createConnectRouter({ ...options, acceptCompression: options.acceptCompression ?? [compressionGzip, compressionBrotli] });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [(options.requestPathPrefix ?? "") + h.requestPath, h]));
  return function nodeRequestHandler(...[req, res]: Parameters<NonNullable<ConnectNodeAdapterOptions["fallback"]>>) {
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
      .then(fixResponse)
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch(() => {
        // Handlers turn their errors into responses; what fails here is writing to a client that went away.
      });
  };
}
