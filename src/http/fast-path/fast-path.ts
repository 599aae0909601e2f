import type { IncomingHttpHeaders } from "node:http";
import type { DescMethod, DescService, Message } from "@bufbuild/protobuf";
import type { ConnectError, ContextValues, ServiceImpl } from "@connectrpc/connect";
import { type Compression, compressionNegotiate, createMethodSerializationLookup, validateReadWriteMaxBytes } from "@connectrpc/connect/protocol";
import * as connectProtocol from "@connectrpc/connect/protocol-connect";
import * as grpcProtocol from "@connectrpc/connect/protocol-grpc";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import type { DataPlane } from "../../interceptors/data-plane.js";
import type { FrontHandler } from "../connect-adapter.js";
import type { StreamHandler } from "../handler.js";
import { readRequestBody, singleMessageLimit } from "../request-body.js";
import { LazyHandlerContext, type RequestFacts } from "./handler-context.js";
import { decodeJsonRequest, decodeRequest } from "./request-decoder.js";
import { type WireFormat, encodedMessage } from "./response-bytes.js";
import { type Answer, clampedHeader, connectErrorOf, envelope, headerValue, messageBytes, nodeHeaders, normalize, single, writeH1Soon, writeH2 } from "./wire.js";
import { isValidAuthority } from "../listener.js";

/** The RPCs the fast path serves, by method name. */
export const FAST_METHODS = ["VerifyToken", "TestApiKey"] as const;

/** What the fast path needs of the router it stands in front of. */
export interface FastPathOptions {
  service: DescService;
  impl: Partial<ServiceImpl<DescService>>;
  /** The data plane's steps; the service must be registered with exactly `dataPlane.interceptors`. */
  dataPlane: DataPlane;
  /** Context values of a call from a peer (its address). */
  contextValues(peer: { socket?: { remoteAddress?: string } | null }): ContextValues;
  /** Told of every request the fast path took: answered itself, or handed on to the generic path after reading its body. */
  observe?: (outcome: "served" | "handed_on") => void;
}

/** The fast path's two entries: HTTP/1.1 requests (in front of connect) and HTTP/2 streams (in front of node's compatibility layer). */
export interface FastPath {
  request: FrontHandler;
  stream: StreamHandler;
}

interface FastMethod {
  method: DescMethod;
  rpc: string;
  impl: (input: unknown, context: LazyHandlerContext) => unknown;
  serialization: ReturnType<typeof createMethodSerializationLookup>;
}

/** One request's protocol as the fast path reads it from its headers. */
interface Shape {
  format: WireFormat;
  protocolName: "grpc" | "connect";
  compression: { request: Compression | null; response: Compression | null };
  timeoutMs: number | undefined;
}

const EMPTY = new Uint8Array(0);

/** A request's node headers read as `Headers.get` reads them, for DataPlane.run. */
class NodeHeaders {
  constructor(private readonly raw: IncomingHttpHeaders) {}

  get(name: string): string | null {
    return headerValue(this.raw, name);
  }
}

/**
 * Answers unary VerifyToken and TestApiKey in the common case (gRPC over h2c,
 * Connect unary binary or JSON, identity request encoding) with the service's own
 * implementation, the data plane's steps, connect's error mapping and
 * serializers, minus connect's pipeline and node's HTTP/2 compatibility objects;
 * response bytes come from `encodedMessage`. Every other request, and every body
 * it cannot parse, goes to connect as it arrived.
 */
export function fastPath(options: FastPathOptions, adapter: ConnectNodeAdapterOptions): FastPath {
  const acceptCompression = adapter.acceptCompression ?? [];
  const readMaxBytes = adapter.readMaxBytes ?? Number.MAX_SAFE_INTEGER;
  const limits = validateReadWriteMaxBytes(readMaxBytes, adapter.writeMaxBytes, adapter.compressMinBytes);
  const errorHook = adapter.errorHook ?? connectErrorOf;
  const { dataPlane } = options;
  const methods = new Map<string, FastMethod>();
  for (const name of FAST_METHODS) {
    const method = options.service.methods.find((m) => m.name === name);
    const impl = (options.impl as Record<string, unknown>)[method?.localName ?? ""];
    if (method === undefined || method.methodKind !== "unary" || typeof impl !== "function") continue;
    methods.set(`/${options.service.typeName}/${name}`, {
      method,
      rpc: `${options.service.typeName}/${name}`,
      impl: (impl as FastMethod["impl"]).bind(options.impl),
      serialization: createMethodSerializationLookup(method, adapter.binaryOptions, adapter.jsonOptions, limits),
    });
  }

  function shapeOf(h: IncomingHttpHeaders, isH2: boolean): Shape | undefined {
    const contentType = h["content-type"];
    if (isH2 && (contentType === "application/grpc" || contentType === "application/grpc+proto")) {
      const timeout = grpcProtocol.parseTimeout(clampedHeader(h["grpc-timeout"], "grpc-timeout"), Number.MAX_SAFE_INTEGER);
      if (timeout.error !== undefined) return undefined;
      const compression = compressionNegotiate(acceptCompression, single(h["grpc-encoding"]), single(h["grpc-accept-encoding"]), "grpc-accept-encoding");
      if (compression.error !== undefined || compression.request !== null) return undefined;
      return { format: "grpc", protocolName: "grpc", compression, timeoutMs: timeout.timeoutMs };
    }
    if (contentType === "application/proto" || contentType === "application/json") {
      const timeout = connectProtocol.parseTimeout(clampedHeader(h["connect-timeout-ms"], "connect-timeout-ms"), Number.MAX_SAFE_INTEGER);
      if (timeout.error !== undefined) return undefined;
      const compression = compressionNegotiate(acceptCompression, single(h["content-encoding"]), single(h["accept-encoding"]), "accept-encoding");
      if (compression.error !== undefined || compression.request !== null) return undefined;
      return { format: contentType === "application/json" ? "json" : "proto", protocolName: "connect", compression, timeoutMs: timeout.timeoutMs };
    }
    return undefined;
  }

  /** The request's message, or undefined when it is not exactly one identity-encoded message the method's parser accepts. */
  function parse(fast: FastMethod, shape: Shape, body: Buffer, limit: number): unknown {
    if (body.length > limit) return undefined;
    const message = messageBytes(body, shape.format === "grpc");
    if (message === undefined) return undefined;
    const decoded = shape.format === "json" ? decodeJsonRequest(fast.method.input, message) : decodeRequest(fast.method.input, message);
    if (decoded !== undefined) return decoded;
    try {
      return fast.serialization.getI(shape.format !== "json").parse(message);
    } catch {
      return undefined;
    }
  }

  /** The call's answer: at once when the steps and the implementation answered without a promise (a cached key), else when they have. */
  function answer(fast: FastMethod, shape: Shape, facts: RequestFacts, input: unknown): Answer | Promise<Answer> {
    const context = new LazyHandlerContext(facts);
    const call = { method: fast.method, rpc: fast.rpc, values: facts.values, headers: new NodeHeaders(facts.headers) };
    let output: Message | Promise<Message>;
    try {
      output = dataPlane.run(call, () => {
        const out = fast.impl(input, context);
        return out instanceof Promise ? out.then((o: unknown) => normalize(fast.method, o)) : normalize(fast.method, out);
      });
    } catch (e) {
      return failed(shape, context, e);
    }
    if (output instanceof Promise) return output.then((o) => answered(fast, shape, context, o), (e: unknown) => failed(shape, context, e));
    return answered(fast, shape, context, output);
  }

  function failed(shape: Shape, context: LazyHandlerContext, e: unknown): Promise<Answer> {
    const error = errorHook(e);
    context.abort(e);
    return failure(shape, context, error);
  }

  function answered(fast: FastMethod, shape: Shape, context: LazyHandlerContext, output: Message): Answer | Promise<Answer> {
    context.abort();
    const grpc = shape.format === "grpc";
    const body = encodedMessage(output, shape.format, fast.serialization.getO(shape.format !== "json"));
    const compression = shape.compression.response;
    const touched = context.touched;
    if (touched.header === undefined && touched.trailer === undefined) {
      // The common answer: the implementation set no header, nothing to compress.
      if (grpc && (compression === null || body.byteLength - 5 < limits.compressMinBytes)) {
        const headers: Record<string, string> = { "content-type": grpcProtocol.contentTypeProto };
        if (compression !== null) headers["grpc-encoding"] = compression.name;
        return { status: 200, headers, body, trailers: { "grpc-status": grpcProtocol.grpcStatusOk } };
      }
      if (!grpc && (compression === null || body.byteLength < limits.compressMinBytes)) {
        const contentType = shape.format === "json" ? connectProtocol.contentTypeUnaryJson : connectProtocol.contentTypeUnaryProto;
        // In the order connect-node writes them (Headers iterate sorted).
        return { status: 200, headers: { "content-length": body.byteLength.toString(10), "content-type": contentType }, body, trailers: undefined };
      }
    }
    return success(shape, context, body);
  }

  /** A successful answer the way connect builds it, when the implementation set headers or the body is compressed. */
  async function success(shape: Shape, context: LazyHandlerContext, encoded: Uint8Array): Promise<Answer> {
    const { header, trailer } = responseHeaders(shape, context);
    const compression = shape.compression.response;
    let body = encoded;
    if (shape.format === "grpc") {
      if (compression !== null) header.set("grpc-encoding", compression.name);
      if (compression !== null && body.byteLength - 5 >= limits.compressMinBytes) body = envelope(await compression.compress(body.subarray(5)), 0b00000001);
      return { status: 200, headers: nodeHeaders(header), body, trailers: nodeHeaders(trailer) };
    }
    if (compression !== null && body.byteLength >= limits.compressMinBytes) {
      body = await compression.compress(body);
      header.set("content-encoding", compression.name);
    }
    const muxed = connectProtocol.trailerMux(header, trailer);
    muxed.set("content-length", body.byteLength.toString(10));
    return { status: 200, headers: nodeHeaders(muxed), body, trailers: undefined };
  }

  /** An error answer, as connect's gRPC and Connect unary handlers write it. */
  async function failure(shape: Shape, context: LazyHandlerContext, error: ConnectError): Promise<Answer> {
    const { header, trailer } = responseHeaders(shape, context);
    const compression = shape.compression.response;
    if (shape.format === "grpc") {
      if (compression !== null) header.set("grpc-encoding", compression.name);
      grpcProtocol.setTrailerStatus(trailer, error);
      return { status: 200, headers: nodeHeaders(header), body: EMPTY, trailers: nodeHeaders(trailer) };
    }
    header.set("content-type", connectProtocol.contentTypeUnaryJson);
    error.metadata.forEach((value, key) => header.set(key, value));
    let body = connectProtocol.errorToJsonBytes(error, adapter.jsonOptions ?? {});
    if (compression !== null && body.byteLength >= limits.compressMinBytes) {
      body = await compression.compress(body);
      header.set("content-encoding", compression.name);
    }
    const muxed = connectProtocol.trailerMux(header, trailer);
    muxed.set("content-length", body.byteLength.toString(10));
    return { status: connectProtocol.codeToHttpStatus(error.code), headers: nodeHeaders(muxed), body, trailers: undefined };
  }

  /** The response header and trailer connect starts from, with what the implementation set. */
  function responseHeaders(shape: Shape, context: LazyHandlerContext): { header: Headers; trailer: Headers } {
    const grpc = shape.format === "grpc";
    const header = new Headers({ "content-type": grpc ? grpcProtocol.contentTypeProto : shape.format === "json" ? connectProtocol.contentTypeUnaryJson : connectProtocol.contentTypeUnaryProto });
    const trailer = new Headers(grpc ? { "grpc-status": grpcProtocol.grpcStatusOk } : undefined);
    const touched = context.touched;
    touched.header?.forEach((value, key) => header.set(key, value));
    touched.trailer?.forEach((value, key) => trailer.set(key, value));
    return { header, trailer };
  }

  /** Answers a request the fast path read and decoded, and counts it. */
  function serve(fast: FastMethod, shape: Shape, input: unknown, facts: Omit<RequestFacts, "method" | "protocolName" | "timeoutMs">, write: (a: Answer) => void): void {
    options.observe?.("served");
    const a = answer(fast, shape, { ...facts, method: fast.method, protocolName: shape.protocolName, timeoutMs: shape.timeoutMs }, input);
    if (a instanceof Promise) a.then(write, () => {});
    else write(a);
  }

  const request: FrontHandler = (req, res, generic) => {
    // HTTP/2 requests reach the fast path as streams (see `stream`).
    if (req.method !== "POST" || "stream" in req) return false;
    const fast = methods.get(req.url ?? "");
    if (fast === undefined) return false;
    const shape = shapeOf(req.headers, false);
    if (shape === undefined) return false;
    const limit = singleMessageLimit(false, readMaxBytes);
    readRequestBody(req, limit, req.headers["content-length"], (body) => {
      // The request ended before its body did: there is no one left to answer.
      if (body === undefined) return;
      const input = parse(fast, shape, body, limit);
      if (input === undefined) {
        options.observe?.("handed_on");
        generic(Promise.resolve(body));
        return;
      }
      const socket = req.socket as { encrypted?: boolean } | null;
      const facts = { headers: req.headers, path: req.url ?? "", authority: req.headers.host ?? "", encrypted: socket?.encrypted === true };
      serve(fast, shape, input, { ...facts, values: options.contextValues(req), source: req }, (a) => writeH1Soon(res, a));
    });
    return true;
  };

  const stream: StreamHandler = (stream, headers, handOn) => {
    if (headers[":method"] !== "POST" || headers.expect !== undefined) return false;
    const path = headers[":path"] ?? "";
    const fast = methods.get(path);
    if (fast === undefined) return false;
    const authority = headers[":authority"];
    if (!isValidAuthority(authority)) return false;
    const shape = shapeOf(headers, true);
    if (shape === undefined) return false;
    const limit = singleMessageLimit(shape.format === "grpc", readMaxBytes);
    readRequestBody(stream, limit, headers["content-length"], (body) => {
      if (body === undefined) return;
      const input = parse(fast, shape, body, limit);
      if (input === undefined) {
        options.observe?.("handed_on");
        handOn(Promise.resolve(body));
        return;
      }
      const session = stream.session;
      const facts = { headers, path, authority, encrypted: session?.encrypted === true };
      serve(fast, shape, input, { ...facts, values: options.contextValues({ socket: session?.socket }), source: stream }, (a) => writeH2(stream, a));
    });
    return true;
  };

  return { request, stream };
}
