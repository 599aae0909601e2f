import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { databaseError } from "../db/database-errors.js";
import { ApiError, apiError, withCode, withErrorDetails } from "../errors.js";

/**
 * What @connectrpc/connect says when a request's bytes cannot be decoded (bad
 * protobuf binary, a compressed frame it cannot inflate). It calls those
 * `internal`, which would page an operator for a client's mistake; they are
 * `invalid_argument`.
 */
const DECODE_FAILURE = /^(parse binary: |decompression failed|received compressed envelope, but do not know how to decompress)/;

/**
 * The one mapping from whatever was thrown to the ConnectError that is sent:
 * an ApiError by its reason, a database error by its SQLSTATE, a ConnectError
 * (from the protocol or an interceptor) with the details of its kind, anything
 * else `internal` with no detail. Idempotent, so observers (request log,
 * metrics, audit) may apply it to see the code the caller will get.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) {
    const code = err.code === Code.Internal && DECODE_FAILURE.test(err.rawMessage) ? Code.InvalidArgument : err.code;
    return withErrorDetails(code === err.code ? err : withCode(err, code));
  }
  const refusal = err instanceof ApiError ? err : databaseError(err);
  if (refusal !== undefined) return apiError(refusal.reason, refusal.message, refusal.facts);
  return apiError("INTERNAL", "internal error", { cause: err });
}

/**
 * The outermost interceptor of every service: whatever the layers below throw
 * (domain refusals, database errors, protocol errors) leaves as the ConnectError
 * of `toConnectError`, on every protocol and REST alike. Errors raised by the
 * protocol before any interceptor runs (a body that does not decode) get the same
 * mapping through the router's `errorHook`.
 */
export function errorInterceptor(): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      throw toConnectError(err);
    }
  };
}
