import { type JsonObject, type Registry, create, fromBinary, toJson } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { withErrorDetails } from "../errors.js";

/** The JSON form of google.rpc.Status that REST errors carry. */
export interface RpcStatus {
  code: number;
  message: string;
  details: JsonObject[];
}

/** HTTP status for each code, as google.rpc.Code documents and grpc-gateway uses. */
const HTTP_STATUS: Record<Code, number> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

/** The HTTP status a REST caller gets for an RPC error code. */
export function httpStatusFromCode(code: Code): number {
  return HTTP_STATUS[code] ?? 500;
}

/**
 * google.rpc.Status JSON for an error, with its details (withErrorDetails).
 * Details whose type the registry knows are expanded as proto3 JSON `Any`;
 * others keep their bytes base64-encoded in `value`.
 */
export function statusBody(err: ConnectError, registry: Registry): RpcStatus {
  const error = withErrorDetails(err);
  const details = error.details.map((d): JsonObject => {
    if ("desc" in d) {
      return { "@type": `type.googleapis.com/${d.desc.typeName}`, ...(toJson(d.desc, create(d.desc, d.value), { registry }) as JsonObject) };
    }
    const desc = registry.getMessage(d.type);
    const typeUrl = `type.googleapis.com/${d.type}`;
    if (desc === undefined) return { "@type": typeUrl, value: Buffer.from(d.value).toString("base64") };
    return { "@type": typeUrl, ...(toJson(desc, fromBinary(desc, d.value), { registry }) as JsonObject) };
  });
  return { code: error.code, message: error.rawMessage, details };
}
