import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, type Interceptor, type ServiceImpl, createContextValues, createMethodImplSpec } from "@connectrpc/connect";
import {
  type Compression,
  compressionNegotiate,
  createMethodSerializationLookup,
  invokeUnaryImplementation,
  validateReadWriteMaxBytes,
} from "@connectrpc/connect/protocol";
import * as connectProtocol from "@connectrpc/connect/protocol-connect";
import * as grpcProtocol from "@connectrpc/connect/protocol-grpc";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import type { FrontHandler } from "../connect-adapter.js";
import { clampDeadline } from "../deadlines.js";
import type { NodeRequest, NodeResponse } from "../handler.js";
import { collectRequestBody, singleMessageLimit } from "../request-body.js";
import { type WireFormat, encodedMessage } from "./response-bytes.js";

/** The RPCs the fast path serves, by method name. */
export const FAST_METHODS = ["VerifyToken", "TestApiKey"] as const;

/** What the fast path needs of the router it stands in front of. */
export interface FastPathOptions {
  service: DescService;
  impl: Partial<ServiceImpl<DescService>>;
  /** The interceptors connect runs for `service` (its own list, or the router's). */
  interceptors: Interceptor[];
  /** Told of every request the fast path took: answered itself, or handed on after reading its body. */
  observe?: (outcome: "served" | "handed_on") => void;
}

interface FastMethod {
  method: DescMethod;
  spec: ReturnType<typeof createMethodImplSpec>;
  serialization: ReturnType<typeof createMethodSerializationLookup>;
}

/** One request's protocol as the fast path reads it from its headers. */
interface Shape {
  format: WireFormat;
  protocolName: "grpc" | "connect";
  compression: { request: Compression | null; response: Compression | null };
  timeoutMs: number | undefined;
}

/**
 * Answers unary VerifyToken and TestApiKey in the common case (gRPC over h2c,
 * Connect unary binary or JSON, identity request encoding) with the service's own
 * implementation, interceptors, error mapping and serializers, minus connect's
 * async-iterable pipeline; response bytes come from `encodedMessage`. Every other
 * request, and every body it cannot parse, goes to connect as it arrived.
 */
export function fastPath(options: FastPathOptions, adapter: ConnectNodeAdapterOptions): FrontHandler {
  const acceptCompression = adapter.acceptCompression ?? [];
  const readMaxBytes = adapter.readMaxBytes ?? Number.MAX_SAFE_INTEGER;
  const limits = validateReadWriteMaxBytes(readMaxBytes, adapter.writeMaxBytes, adapter.compressMinBytes);
  const errorHook = adapter.errorHook;
  const contextValues = adapter.contextValues;
  const methods = new Map<string, FastMethod>();
  for (const name of FAST_METHODS) {
    const method = options.service.methods.find((m) => m.name === name);
    const impl = (options.impl as Record<string, unknown>)[method?.localName ?? ""];
    if (method === undefined || method.methodKind !== "unary" || typeof impl !== "function") continue;
    methods.set(`/${options.service.typeName}/${name}`, {
      method,
      spec: createMethodImplSpec(method, impl as never),
      serialization: createMethodSerializationLookup(method, adapter.binaryOptions, adapter.jsonOptions, limits),
    });
  }

  function shapeOf(req: NodeRequest): Shape | undefined {
    const h = req.headers;
    const contentType = h["content-type"];
    const isH2 = "stream" in req;
    let shape: Shape;
    if (isH2 && (contentType === "application/grpc" || contentType === "application/grpc+proto")) {
      const timeout = grpcProtocol.parseTimeout(clampedHeader(h["grpc-timeout"], "grpc-timeout"), Number.MAX_SAFE_INTEGER);
      if (timeout.error !== undefined) return undefined;
      const compression = compressionNegotiate(acceptCompression, single(h["grpc-encoding"]), single(h["grpc-accept-encoding"]), "grpc-accept-encoding");
      if (compression.error !== undefined || compression.request !== null) return undefined;
      shape = { format: "grpc", protocolName: "grpc", compression, timeoutMs: timeout.timeoutMs };
    } else if (contentType === "application/proto" || contentType === "application/json") {
      const timeout = connectProtocol.parseTimeout(clampedHeader(h["connect-timeout-ms"], "connect-timeout-ms"), Number.MAX_SAFE_INTEGER);
      if (timeout.error !== undefined) return undefined;
      const compression = compressionNegotiate(acceptCompression, single(h["content-encoding"]), single(h["accept-encoding"]), "accept-encoding");
      if (compression.error !== undefined || compression.request !== null) return undefined;
      shape = { format: contentType === "application/json" ? "json" : "proto", protocolName: "connect", compression, timeoutMs: timeout.timeoutMs };
    } else {
      return undefined;
    }
    return shape;
  }

  return (req, res, generic) => {
    if (req.method !== "POST") return false;
    const fast = methods.get(req.url ?? "");
    if (fast === undefined) return false;
    const shape = shapeOf(req);
    if (shape === undefined) return false;
    const enveloped = shape.format === "grpc";
    const limit = singleMessageLimit(enveloped, readMaxBytes);
    const collected = collectRequestBody(req, limit);
    collected.then(
      (body) => {
        const message = body.length <= limit ? messageBytes(body, enveloped) : undefined;
        let input: unknown;
        try {
          if (message === undefined) throw new Error("not a single identity-encoded message");
          input = fast.serialization.getI(shape.format !== "json").parse(message);
        } catch {
          options.observe?.("handed_on");
          generic(collected);
          return;
        }
        options.observe?.("served");
        serve(req, res, fast, shape, input).catch(() => {
          // What fails here is writing to a client that went away, as in the generic path.
        });
      },
      // The request ended before its body did: there is no one left to answer.
      () => {},
    );
    return true;
  };

  async function serve(req: NodeRequest, res: NodeResponse, fast: FastMethod, shape: Shape, input: unknown): Promise<void> {
    const grpc = shape.protocolName === "grpc";
    const context = handlerContext(req, fast, shape, contextValues?.(req), {
      "content-type": grpc ? grpcProtocol.contentTypeProto : shape.format === "json" ? connectProtocol.contentTypeUnaryJson : connectProtocol.contentTypeUnaryProto,
      ...(grpc && { "grpc-status": grpcProtocol.grpcStatusOk }),
    });
    const responseCompression = shape.compression.response;
    if (grpc && responseCompression !== null) context.responseHeader.set("grpc-encoding", responseCompression.name);
    let status = 200;
    let body: Uint8Array;
    try {
      const output = await invokeUnaryImplementation(fast.spec as never, context, input as never, options.interceptors);
      body = encodedMessage(output, shape.format, fast.serialization.getO(shape.format !== "json"));
    } catch (e) {
      context.abort(e);
      const error = errorHook !== undefined ? errorHook(e) : connectErrorOf(e);
      if (grpc) {
        grpcProtocol.setTrailerStatus(context.responseTrailer, error);
        body = new Uint8Array(0);
      } else {
        status = connectProtocol.codeToHttpStatus(error.code);
        context.responseHeader.set("content-type", connectProtocol.contentTypeUnaryJson);
        error.metadata.forEach((value, key) => context.responseHeader.set(key, value));
        body = connectProtocol.errorToJsonBytes(error, adapter.jsonOptions ?? {});
      }
    } finally {
      context.abort(CALL_ENDED);
    }
    if (grpc) {
      if (body.byteLength > 0 && responseCompression !== null && body.byteLength - 5 >= limits.compressMinBytes) {
        const data = await responseCompression.compress(body.subarray(5));
        body = envelope(data, 0b00000001);
      }
      res.writeHead(200, nodeHeaders(context.responseHeader));
      if (body.byteLength > 0) res.write(body);
      res.addTrailers(nodeHeaders(context.responseTrailer));
    } else {
      if (responseCompression !== null && body.byteLength >= limits.compressMinBytes) {
        body = await responseCompression.compress(body);
        context.responseHeader.set("content-encoding", responseCompression.name);
      }
      const header = connectProtocol.trailerMux(context.responseHeader, context.responseTrailer);
      header.set("content-length", body.byteLength.toString(10));
      res.writeHead(status, nodeHeaders(header));
      res.write(body);
    }
    res.end();
  }
}

/** The abort reason of a call that ended (connect's context aborts without one, which builds a DOMException per call). */
const CALL_ENDED = new ConnectError("call ended", Code.Canceled);
/** The abort reason of a call whose request closed before the call ended. */
const REQUEST_CLOSED = new ConnectError("request closed", Code.Canceled);

/**
 * The HandlerContext connect's createHandlerContext and universalRequestFromNodeRequest
 * build together (same fields, same header conversion, same URL, same deadline), with
 * one AbortController where they chain three: it aborts on the deadline, when the
 * request closes before the call ends, and when the call ends.
 */
function handlerContext(
  req: NodeRequest,
  fast: FastMethod,
  shape: Shape,
  contextValues: ContextValues | undefined,
  response: { "content-type": string; "grpc-status"?: string },
) {
  const requestHeader = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.startsWith(":") || v === undefined) continue;
    if (typeof v === "string") requestHeader.append(k, v);
    else for (const e of v) requestHeader.append(k, e);
  }
  clampDeadline(requestHeader);
  // HTTP/2's req.socket is a Proxy whose every access costs; the session knows whether it is TLS.
  const encrypted = "stream" in req ? req.stream.session?.encrypted === true : "encrypted" in req.socket && (req.socket as { encrypted?: boolean }).encrypted === true;
  const authority = "authority" in req ? req.authority : req.headers.host;
  const controller = new AbortController();
  let deadline: NodeJS.Timeout | undefined;
  let timeoutMs = (): number | undefined => undefined;
  if (shape.timeoutMs !== undefined) {
    const at = Date.now() + shape.timeoutMs;
    timeoutMs = () => at - Date.now();
    const expire = () => controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    if (shape.timeoutMs <= 0) expire();
    else deadline = setTimeout(expire, shape.timeoutMs);
  }
  const onClose = () => controller.abort(REQUEST_CLOSED);
  req.once("close", onClose);
  const { "content-type": contentType, "grpc-status": grpcStatus } = response;
  return {
    ...fast.spec,
    service: fast.method.parent,
    requestMethod: "POST",
    protocolName: shape.protocolName,
    url: new URL(req.url ?? "", `${encrypted ? "https" : "http"}://${authority}`).toString(),
    signal: controller.signal,
    timeoutMs,
    requestHeader,
    responseHeader: new Headers({ "content-type": contentType }),
    responseTrailer: new Headers(grpcStatus === undefined ? undefined : { "grpc-status": grpcStatus }),
    values: contextValues ?? createContextValues(),
    contextValues,
    abort(reason: unknown) {
      clearTimeout(deadline);
      req.off("close", onClose);
      controller.abort(reason);
    },
  };
}

/** The one message of an identity-encoded body: gRPC's single uncompressed envelope, Connect's whole body. */
function messageBytes(body: Buffer, enveloped: boolean): Uint8Array | undefined {
  if (!enveloped) return body;
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return undefined;
  return body.subarray(5);
}

function envelope(data: Uint8Array, flags: number): Uint8Array {
  const out = Buffer.allocUnsafe(5 + data.byteLength);
  out[0] = flags;
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, 5);
  return out;
}

/** A header value as one string, as Headers.get returns it (null when absent). */
function single(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return typeof value === "string" ? value : value.join(", ");
}

/** The timeout header's value after clampDeadline, as connect reads it. */
function clampedHeader(value: string | string[] | undefined, name: string): string | null {
  const raw = single(value);
  if (raw === null) return null;
  const header = new Headers({ [name]: raw });
  clampDeadline(header);
  return header.get(name);
}

/** Headers as Node's writeHead takes them, the way connect-node converts them. */
function nodeHeaders(headers: Headers): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  headers.forEach((value, key) => {
    out[key] = value;
  });
  return out;
}

/** What connect sends for an error when no errorHook is set. */
function connectErrorOf(e: unknown): ConnectError {
  return e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
}
