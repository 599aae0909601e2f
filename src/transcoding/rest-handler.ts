import {
  type DescMethod,
  type JsonValue,
  createRegistry,
  fromBinary,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type ContextValues, type Interceptor, createConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import { clampDeadline } from "../http/deadlines.js";
import { toConnectError } from "../interceptors/errors.js";
import type { HttpHandler } from "../http/handler.js";
import { type HttpRoute, httpRoutes } from "./http-rules.js";
import { PathDecodeError, type TemplateMatch, compareSpecificity, matchTemplate } from "./path-template.js";
import { file_google_rpc_error_details } from "../gen/google/rpc/error_details_pb.js";
import { readJsonBody } from "../http/strict-json.js";
import { buildRequestMessage } from "./request-message.js";
import { type RpcStatus, httpStatusFromCode, statusBody } from "./status.js";

type NodeRequest = Parameters<HttpHandler>[0];
type NodeResponse = Parameters<HttpHandler>[1];

/** What the RPC side of the listener is built with; REST calls go through the same. */
export interface RestHandlerOptions {
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
  readMaxBytes: number;
  contextValues?: (req: NodeRequest) => ContextValues;
  /** Maps every error the inner RPC sends (see the router option). */
  errorHook?: (error: unknown) => ConnectError;
}

/** Request headers that describe the REST body or connection, not the call. */
const DROPPED_REQUEST_HEADERS = new Set([
  "content-type",
  "content-length",
  "content-encoding",
  "accept-encoding",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "upgrade",
  "te",
]);

/** Response headers of the inner Connect call that must not leak into the REST answer. */
const DROPPED_RESPONSE_HEADERS = new Set(["content-type", "content-length", "content-encoding", "accept-encoding"]);

/**
 * Serves the `google.api.http` routes of the services that `routes` registers, by
 * calling their Connect handlers (same interceptors, same implementations) with a
 * unary request built from the path, query and JSON body.
 */
export function restHandler(options: RestHandlerOptions): HttpHandler {
  const router = createConnectRouter({ interceptors: options.interceptors, readMaxBytes: options.readMaxBytes, errorHook: options.errorHook });
  options.routes(router);
  const handlers = new Map<DescMethod, UniversalHandler>(router.handlers.map((h) => [h.method, h]));
  const services = [...new Set(router.handlers.map((h) => h.service))];
  const routes = httpRoutes(services);
  // The error details' types too, so REST expands them as JSON.
  const registry = createRegistry(file_google_rpc_error_details, ...new Set(services.flatMap((s) => [s.file, ...s.file.dependencies])));

  return async (req, res) => {
    const url = req.url ?? "/";
    const queryStart = url.indexOf("?");
    const rawPath = queryStart < 0 ? url : url.slice(0, queryStart);
    const query = new URLSearchParams(queryStart < 0 ? "" : url.slice(queryStart + 1));

    let matches: Array<{ route: HttpRoute; match: TemplateMatch }>;
    try {
      matches = routes.flatMap((route) => {
        const match = matchTemplate(route.template, rawPath);
        return match === undefined ? [] : [{ route, match }];
      });
    } catch (err) {
      if (!(err instanceof PathDecodeError)) throw err;
      sendStatus(res, 400, { code: Code.InvalidArgument, message: err.message, details: [] });
      return true;
    }
    if (matches.length === 0) return false;

    const method = (req.method ?? "GET").toUpperCase();
    // The path belongs to its most specific templates: /api_keys/verify is the verify route,
    // never the key "verify", whatever the method.
    matches.sort((a, b) => compareSpecificity(a.route.template, b.route.template));
    const owners = matches.filter((m) => compareSpecificity(m.route.template, matches[0]!.route.template) === 0);
    // HEAD is GET without the body, as HTTP defines it.
    const chosen = owners.find((m) => m.route.httpMethod === (method === "HEAD" ? "GET" : method));
    const head = method === "HEAD";
    if (chosen === undefined) {
      const methods = new Set(owners.map((m) => m.route.httpMethod));
      if (methods.has("GET")) methods.add("HEAD");
      const allow = [...methods].sort().join(", ");
      sendStatus(res, 405, { code: Code.Unimplemented, message: `method ${method} not allowed on ${rawPath}; allowed: ${allow}`, details: [] }, { allow }, head);
      return true;
    }

    const answer = await handle(chosen.route, chosen.match, req, query);
    if ("rpcStatus" in answer) {
      sendStatus(res, answer.status, answer.rpcStatus, answer.headers, head);
    } else {
      const text = JSON.stringify(answer.json);
      res.writeHead(200, { ...answer.headers, "content-type": "application/json", "content-length": String(Buffer.byteLength(text)) });
      if (head) res.end();
      else res.end(text);
    }
    return true;
  };

  async function handle(
    route: HttpRoute,
    match: TemplateMatch,
    req: NodeRequest,
    query: URLSearchParams,
  ): Promise<{ status: number; rpcStatus: RpcStatus; headers?: Record<string, string> } | { json: JsonValue; headers: Record<string, string> }> {
    let body: JsonValue | undefined;
    if (route.body !== undefined) {
      const read = await readBody(req, options.readMaxBytes);
      if (read.tooLarge) {
        return { status: 413, rpcStatus: { code: Code.ResourceExhausted, message: `request body exceeds ${options.readMaxBytes} bytes`, details: [] } };
      }
      const decoded = await decodeContent(read.bytes, req.headers["content-encoding"], options.readMaxBytes);
      if ("refusal" in decoded) return decoded.refusal;
      read.bytes = decoded.bytes;
      if (read.bytes.length > 0) {
        const contentType = req.headers["content-type"];
        if (!isJsonContentType(contentType)) {
          return {
            status: 415,
            rpcStatus: { code: Code.InvalidArgument, message: `unsupported content type ${JSON.stringify(contentType ?? "")}; send application/json`, details: [] },
          };
        }
        try {
          body = readJsonBody(read.bytes);
        } catch (err) {
          return { status: 400, rpcStatus: { code: Code.InvalidArgument, message: `request body is not valid JSON: ${(err as Error).message}`, details: [] } };
        }
      }
    }

    let requestBytes: Uint8Array;
    try {
      requestBytes = toBinary(route.method.input, buildRequestMessage(route, match, query, body));
    } catch (err) {
      const connectErr = toConnectError(err);
      return { status: httpStatusFromCode(connectErr.code), rpcStatus: statusBody(connectErr, registry) };
    }

    const handler = handlers.get(route.method)!;
    const abort = new AbortController();
    const onClose = () => abort.abort();
    req.once("close", onClose);
    try {
      const header = new Headers();
      for (const [name, value] of Object.entries(req.headers)) {
        if (name.startsWith(":") || DROPPED_REQUEST_HEADERS.has(name) || value === undefined) continue;
        for (const v of Array.isArray(value) ? value : [value]) header.append(name, v);
      }
      clampDeadline(header);
      header.set("content-type", "application/proto");
      header.set("connect-protocol-version", "1");
      const response = await handler({
        httpVersion: req.httpVersion,
        url: `http://${req.headers.host ?? req.headers[":authority"] ?? "localhost"}${handler.requestPath}`,
        method: "POST",
        header,
        body: single(requestBytes),
        signal: abort.signal,
        contextValues: options.contextValues?.(req),
      });
      const bytes = await collect(response.body);
      // Headers the call set, error metadata (e.g. Retry-After) included.
      const headers: Record<string, string> = {};
      response.header?.forEach((value, name) => {
        if (!DROPPED_RESPONSE_HEADERS.has(name) && !name.startsWith("connect-")) headers[name] = value;
      });
      if (response.status !== 200) {
        const error = errorFromJsonBytes(bytes, response.header, new ConnectError(`upstream answered HTTP ${response.status}`, Code.Internal));
        return { status: httpStatusFromCode(error.code), rpcStatus: statusBody(error, registry), headers };
      }
      const output = fromBinary(route.method.output, bytes);
      const full = toJson(route.method.output, output, { alwaysEmitImplicit: true, registry }) as Record<string, JsonValue>;
      const json = route.responseBody === undefined ? full : (full[route.responseBody.jsonName] ?? null);
      return { json, headers };
    } finally {
      req.off("close", onClose);
    }
  }
}

function sendStatus(res: NodeResponse, status: number, rpcStatus: RpcStatus, extra: Record<string, string> = {}, head = false) {
  // REST's own refusals get their details like every other error.
  const body = rpcStatus.details.length > 0 ? rpcStatus : statusBody(new ConnectError(rpcStatus.message, rpcStatus.code), createRegistry());
  const headers: Record<string, string> = { ...extra, "content-type": "application/json" };
  if (status === 401) headers["www-authenticate"] = "Bearer";
  const text = JSON.stringify(body);
  headers["content-length"] = String(Buffer.byteLength(text));
  res.writeHead(status, headers);
  if (head) res.end();
  else res.end(text);
}

/** Content codings a REST body may use (Content-Encoding), besides identity. */
const DECOMPRESSORS: Record<string, (bytes: Uint8Array, options: zlib.ZlibOptions & zlib.BrotliOptions) => Promise<Buffer>> = {
  gzip: promisify(zlib.gunzip),
  "x-gzip": promisify(zlib.gunzip),
  br: promisify(zlib.brotliDecompress),
};
const ACCEPTED_ENCODINGS = "gzip, br";

/**
 * Undoes the body's content codings, last applied first. The size limit holds for
 * what they decompress to, so a small bomb is refused like a big body.
 */
async function decodeContent(
  bytes: Uint8Array,
  header: string | undefined,
  maxBytes: number,
): Promise<{ bytes: Uint8Array } | { refusal: { status: number; rpcStatus: RpcStatus; headers?: Record<string, string> } }> {
  const codings = (header ?? "").split(",").map((c) => c.trim().toLowerCase()).filter((c) => c !== "" && c !== "identity");
  for (const coding of codings) {
    if (DECOMPRESSORS[coding] === undefined) {
      const message = `unsupported Content-Encoding ${JSON.stringify(coding.slice(0, 64))}; send ${ACCEPTED_ENCODINGS} or identity`;
      return { refusal: { status: 415, rpcStatus: { code: Code.InvalidArgument, message, details: [] }, headers: { "accept-encoding": ACCEPTED_ENCODINGS } } };
    }
  }
  if (bytes.length === 0) return { bytes };
  for (const coding of codings.reverse()) {
    try {
      bytes = await DECOMPRESSORS[coding]!(bytes, { maxOutputLength: maxBytes });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
        const message = `request body exceeds ${maxBytes} bytes once decompressed`;
        return { refusal: { status: 413, rpcStatus: { code: Code.ResourceExhausted, message, details: [] } } };
      }
      const message = `request body is not valid ${coding}: ${(err as Error).message}`;
      return { refusal: { status: 400, rpcStatus: { code: Code.InvalidArgument, message, details: [] } } };
    }
  }
  return { bytes };
}

/** application/json, optionally with charset=utf-8; anything else is refused with 415. */
function isJsonContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  const [type, ...params] = value.split(";").map((s) => s.trim().toLowerCase());
  if (type !== "application/json") return false;
  return params.every((p) => !p.startsWith("charset=") || p === "charset=utf-8" || p === 'charset="utf-8"');
}

/** Reads the whole body; past `maxBytes` it keeps draining (so the answer can be sent) but stores nothing. */
function readBody(req: NodeRequest, maxBytes: number): Promise<{ bytes: Uint8Array; tooLarge: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) chunks.push(chunk);
    });
    req.once("end", () => resolve(size > maxBytes ? { bytes: new Uint8Array(), tooLarge: true } : { bytes: Buffer.concat(chunks), tooLarge: false }));
    req.once("error", reject);
  });
}

async function* single(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

async function collect(body: AsyncIterable<Uint8Array> | undefined): Promise<Uint8Array> {
  if (body === undefined) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}
