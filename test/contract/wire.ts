import http from "node:http";
import http2 from "node:http2";
import { type DescMethod, fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { type ErrorInfo, ErrorInfoSchema, RetryInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.js";

/*
 * A raw client for each wire protocol, written from the specs rather than with
 * connect's transports: the matrix must send bytes a typed client cannot (unknown
 * fields, enum names, malformed frames) and read the status exactly as sent.
 */

export const WIRE_PROTOCOLS = ["connect-json", "connect-binary", "grpc", "grpc-web", "rest"] as const;
export type WireProtocol = (typeof WIRE_PROTOCOLS)[number];

/** One request in every encoding a case can be written in. */
export interface WireRequest {
  method: DescMethod;
  /** The request as proto3 JSON text (or raw bytes, to send text that is not UTF-8), for the JSON codecs. */
  json?: string | Uint8Array;
  /** The request as protobuf binary, for the binary codecs. */
  binary?: Uint8Array;
  /** The REST call (google.api.http binding). */
  rest?: { httpMethod: string; path: string; body?: string | Uint8Array };
  /** Authorization header value, if any. */
  authorization?: string;
}

/** What came back, read off the wire. */
export interface WireAnswer {
  code: Code | 0;
  message: string;
  /** google.rpc.ErrorInfo from the details, if any. */
  errorInfo?: ErrorInfo;
  /** Type names of every detail, in order. */
  detailTypes: string[];
  /** RetryInfo delay in ms, if the error carries one. */
  retryDelayMs?: number;
  httpStatus: number;
  /** The response body for a successful JSON call (Connect JSON, REST). */
  json?: unknown;
}

/** Whether a protocol can express a request written in these encodings. */
export function canExpress(protocol: WireProtocol, req: WireRequest): boolean {
  switch (protocol) {
    case "connect-json":
      return req.json !== undefined;
    case "connect-binary":
      return req.binary !== undefined;
    case "grpc":
    case "grpc-web":
      return req.binary !== undefined || req.json !== undefined;
    case "rest":
      return req.rest !== undefined;
  }
}

/** Sends `req` over `protocol` to the server at 127.0.0.1:port, from `localAddress`. */
export async function send(protocol: WireProtocol, port: number, localAddress: string, req: WireRequest): Promise<WireAnswer> {
  const path = `/${req.method.parent.typeName}/${req.method.name}`;
  const auth: Record<string, string> = req.authorization === undefined ? {} : { authorization: req.authorization };
  switch (protocol) {
    case "connect-json":
    case "connect-binary": {
      const json = protocol === "connect-json";
      const res = await h1(port, localAddress, "POST", path, { ...auth, "content-type": json ? "application/json" : "application/proto", "connect-protocol-version": "1" }, json ? bytes(req.json!) : req.binary!);
      if (res.status === 200) return { code: 0, message: "", detailTypes: [], httpStatus: 200, json: json ? JSON.parse(res.body.toString()) : undefined };
      const body = JSON.parse(res.body.toString()) as { code: string; message?: string; details?: Array<{ type: string; value: string }> };
      const details = (body.details ?? []).map((d) => ({ typeUrl: `type.googleapis.com/${d.type}`, value: Buffer.from(d.value, "base64") }));
      return { ...fromDetails(details), code: codeFromString(body.code) ?? Code.Unknown, message: body.message ?? "", httpStatus: res.status };
    }
    case "grpc": {
      const json = req.binary === undefined;
      const res = await h2(port, localAddress, path, { ...auth, "content-type": json ? "application/grpc+json" : "application/grpc", te: "trailers" }, envelope(json ? bytes(req.json!) : req.binary!));
      return grpcAnswer({ ...res.headers, ...res.trailers }, 200);
    }
    case "grpc-web": {
      const json = req.binary === undefined;
      const res = await h1(port, localAddress, "POST", path, { ...auth, "content-type": json ? "application/grpc-web+json" : "application/grpc-web+proto", "x-grpc-web": "1" }, envelope(json ? bytes(req.json!) : req.binary!));
      const fields: Record<string, string> = {};
      for (const [name, value] of Object.entries(res.headers)) if (typeof value === "string") fields[name] = value;
      // Trailers travel in the last frame of the body unless the response is trailers-only.
      for (let at = 0; at + 5 <= res.body.length; ) {
        const length = res.body.readUInt32BE(at + 1);
        if (res.body[at] === 0x80) {
          for (const line of res.body.subarray(at + 5, at + 5 + length).toString().split("\r\n")) {
            const colon = line.indexOf(":");
            if (colon > 0) fields[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
          }
        }
        at += 5 + length;
      }
      return grpcAnswer(fields, res.status);
    }
    case "rest": {
      const rest = req.rest!;
      const headers: Record<string, string> = { ...auth, ...(rest.body !== undefined && { "content-type": "application/json" }) };
      const res = await h1(port, localAddress, rest.httpMethod, rest.path, headers, rest.body === undefined ? undefined : bytes(rest.body));
      const body = JSON.parse(res.body.toString()) as { code?: number; message?: string; details?: Array<Record<string, unknown>> };
      if (res.status === 200) return { code: 0, message: "", detailTypes: [], httpStatus: 200, json: body };
      const details = body.details ?? [];
      const info = details.find((d) => d["@type"] === `type.googleapis.com/${ErrorInfoSchema.typeName}`);
      const retry = details.find((d) => d["@type"] === `type.googleapis.com/${RetryInfoSchema.typeName}`);
      return {
        code: body.code as Code,
        message: body.message ?? "",
        httpStatus: res.status,
        detailTypes: details.map((d) => String(d["@type"]).replace("type.googleapis.com/", "")),
        ...(info !== undefined && { errorInfo: { reason: info.reason, domain: info.domain, metadata: info.metadata ?? {} } as ErrorInfo }),
        ...(retry !== undefined && { retryDelayMs: Number.parseFloat(String(retry.retryDelay)) * 1000 }),
      };
    }
  }
}

function grpcAnswer(fields: Record<string, string | string[] | undefined>, httpStatus: number): WireAnswer {
  const code = Number(fields["grpc-status"]) as Code | 0;
  const message = decodeURIComponent(String(fields["grpc-message"] ?? ""));
  const bin = fields["grpc-status-details-bin"];
  if (typeof bin !== "string") return { code, message, detailTypes: [], httpStatus };
  const status = fromBinary(StatusSchema, Buffer.from(bin, "base64"));
  return { ...fromDetails(status.details), code, message, httpStatus };
}

function fromDetails(details: Array<{ typeUrl: string; value: Uint8Array }>): Pick<WireAnswer, "errorInfo" | "detailTypes" | "retryDelayMs"> {
  const any = details.map((d) => ({ $typeName: "google.protobuf.Any" as const, typeUrl: d.typeUrl, value: d.value }));
  const info = any.map((a) => anyUnpack(a, ErrorInfoSchema)).find((m) => m !== undefined);
  const retry = any.map((a) => anyUnpack(a, RetryInfoSchema)).find((m) => m !== undefined);
  return {
    detailTypes: details.map((d) => d.typeUrl.replace("type.googleapis.com/", "")),
    ...(info !== undefined && { errorInfo: info }),
    ...(retry?.retryDelay !== undefined && { retryDelayMs: Number(retry.retryDelay.seconds) * 1000 + retry.retryDelay.nanos / 1e6 }),
  };
}

function bytes(value: string | Uint8Array): Uint8Array {
  return typeof value === "string" ? Buffer.from(value) : value;
}

function envelope(data: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + data.length);
  frame.writeUInt32BE(data.length, 1);
  frame.set(data, 5);
  return frame;
}

function h1(port: number, localAddress: string, method: string, path: string, headers: Record<string, string>, body: Uint8Array | undefined) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, localAddress, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

function h2(port: number, localAddress: string, path: string, headers: Record<string, string>, body: Uint8Array) {
  return new Promise<{ headers: Record<string, string>; trailers: Record<string, string> }>((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`, { localAddress } as http2.SecureClientSessionOptions);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, ...headers });
    let responseHeaders: Record<string, string> = {};
    let trailers: Record<string, string> = {};
    stream.on("response", (h) => (responseHeaders = h as Record<string, string>));
    stream.on("trailers", (t) => (trailers = t as Record<string, string>));
    stream.on("data", () => {});
    stream.on("end", () => {
      session.close();
      resolve({ headers: responseHeaders, trailers });
    });
    stream.on("error", reject);
    stream.end(body);
  });
}
