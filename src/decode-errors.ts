import { type JsonObject, type JsonValue, create } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createConnectRouter, encodeBinaryHeader } from "@connectrpc/connect";
import {
  type ConnectNodeAdapterOptions,
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorFromJson, errorToJson } from "@connectrpc/connect/protocol-connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { withCode, withErrorDetails } from "./errors.js";
import { StatusSchema } from "./gen/google/rpc/status_pb.js";
import { STRICT_JSON_OPTIONS } from "./strict-json.js";
import { clampDeadline } from "./deadlines.js";
import { linearRequestBody } from "./request-body.js";

/**
 * What @connectrpc/connect says when a request's bytes cannot be decoded (bad
 * protobuf binary, a compressed frame it cannot inflate). It answers those with
 * `internal` before any handler or interceptor runs, which would page an operator
 * for a client's mistake; they are `invalid_argument`.
 */
const DECODE_FAILURE = /^(parse binary: |decompression failed|received compressed envelope, but do not know how to decompress)/;

const GRPC_STATUS_OK = "0";
const TRAILER_FLAG = 0x80;
const END_STREAM_FLAG = 0x02;

/**
 * The error as this service sends it: a decode failure is invalid_argument, and
 * every error carries its details (withErrorDetails). Errors raised by connect
 * itself, before any handler runs, only get them here.
 */
function completeError(error: ConnectError): ConnectError {
  const code = error.code === Code.Internal && DECODE_FAILURE.test(error.rawMessage) ? Code.InvalidArgument : error.code;
  return withErrorDetails(code === error.code ? error : withCode(error, code));
}

/**
 * Completes a gRPC status carried in headers (trailers-only) or trailers; true
 * when it changed them. The grpc-message is left as connect encoded it.
 */
function fixGrpcStatus(headers: Headers | undefined): boolean {
  const status = headers?.get("grpc-status");
  if (headers === undefined || status === null || status === undefined || status === GRPC_STATUS_OK) return false;
  let error: ConnectError | undefined;
  try {
    error = findTrailerError(headers);
  } catch {
    return false;
  }
  if (error === undefined) return false;
  // findTrailerError keeps the whole header set as the error's metadata; only the status matters here.
  const bare = new ConnectError(error.rawMessage, error.code);
  bare.details = error.details;
  const completed = completeError(bare);
  if (completed === bare) return false;
  headers.set("grpc-status", String(completed.code));
  const detailsStatus = create(StatusSchema, {
    code: completed.code,
    message: completed.rawMessage,
    details: completed.details.map((d) =>
      "desc" in d ? anyPack(d.desc, create(d.desc, d.value)) : { typeUrl: `type.googleapis.com/${d.type}`, value: d.value },
    ),
  });
  headers.set("grpc-status-details-bin", encodeBinaryHeader(detailsStatus, StatusSchema));
  return true;
}

/** Completes a Connect error object ({code, message, details}); undefined when it cannot be read. */
function fixConnectErrorJson(json: JsonValue | undefined): { error: ConnectError; json: JsonObject } | undefined {
  let error: ConnectError;
  try {
    error = errorFromJson(json ?? null, undefined, new ConnectError("unreadable error"));
  } catch {
    return undefined;
  }
  const completed = completeError(error);
  return { error: completed, json: errorToJson(completed, undefined) as JsonObject };
}

/** Completes the status inside an enveloped frame: gRPC-Web trailers or a Connect end-stream message. */
function fixFrame(chunk: Uint8Array): Uint8Array {
  if (chunk.length < 5) return chunk;
  const flags = chunk[0]!;
  const length = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).readUInt32BE(1);
  if (length !== chunk.length - 5) return chunk;
  let data: Uint8Array | undefined;
  if (flags === TRAILER_FLAG) {
    const trailer = trailerParse(chunk.subarray(5));
    if (fixGrpcStatus(trailer)) data = trailerSerialize(trailer);
  } else if (flags === END_STREAM_FLAG) {
    let endStream: { error?: JsonValue };
    try {
      endStream = JSON.parse(Buffer.from(chunk.subarray(5)).toString("utf8")) as typeof endStream;
    } catch {
      return chunk;
    }
    if (endStream.error === undefined) return chunk;
    const fixed = fixConnectErrorJson(endStream.error);
    if (fixed === undefined) return chunk;
    data = Buffer.from(JSON.stringify({ ...endStream, error: fixed.json }), "utf8");
  }
  if (data === undefined) return chunk;
  const out = Buffer.alloc(5 + data.length);
  out[0] = flags;
  out.writeUInt32BE(data.length, 1);
  out.set(data, 5);
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
  const unaryError = res.status !== 200 && contentType.startsWith("application/json") && !res.header?.has("content-encoding");
  if (unaryError && res.body !== undefined) {
    // A Connect unary error: one small JSON body.
    const chunks: Uint8Array[] = [];
    for await (const chunk of res.body) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString("utf8");
    let fixed: ReturnType<typeof fixConnectErrorJson>;
    try {
      fixed = fixConnectErrorJson(JSON.parse(text) as JsonValue);
    } catch {
      fixed = undefined;
    }
    const body = Buffer.from(fixed === undefined ? text : JSON.stringify(fixed.json), "utf8");
    res.header?.set("content-length", String(body.length));
    return {
      ...res,
      status: fixed === undefined ? res.status : codeToHttpStatus(fixed.error.code),
      body: (async function* () {
        yield body;
      })(),
    };
  }
  return res.body === undefined ? res : { ...res, body: fixBody(res.body, res.trailer) };
}

/**
 * `connectNodeAdapter`, except that JSON is read strictly (STRICT_JSON_OPTIONS),
 * requests whose bytes cannot be decoded are answered `invalid_argument` (HTTP
 * 400 for Connect) instead of `internal`, every error carries its details,
 * request bodies are read in linear time (see linearRequestBody) and over-long
 * deadlines are clamped (see clampDeadline).
 */
export function connectNodeAdapterWithDecodeErrors(options: ConnectNodeAdapterOptions) {
  const router = createConnectRouter({
    ...options,
    acceptCompression: options.acceptCompression ?? [compressionGzip, compressionBrotli],
    jsonOptions: { ...STRICT_JSON_OPTIONS, ...options.jsonOptions },
  });
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
