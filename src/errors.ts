import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/** The `google.rpc.ErrorInfo.domain` of every error this service sends. */
export const ERROR_DOMAIN = "apikeys";

/**
 * Every `google.rpc.ErrorInfo.reason` this service sends, with the code it comes
 * with. docs/api.md describes each one; clients branch on the reason, not on the message.
 */
export const REASONS = {
  API_KEY_MISSING: Code.Unauthenticated,
  AUTHORIZATION_MALFORMED: Code.Unauthenticated,
  API_KEY_INVALID: Code.Unauthenticated,
  API_KEY_DISABLED: Code.Unauthenticated,
  API_KEY_EXPIRED: Code.Unauthenticated,
  API_KEY_IP_NOT_ALLOWED: Code.Unauthenticated,
  API_KEY_RATE_LIMITED: Code.Unauthenticated,
  API_KEY_USAGE_EXCEEDED: Code.Unauthenticated,
  AUTH_THROTTLED: Code.ResourceExhausted,
  PERMISSION_MISSING: Code.PermissionDenied,
  ACCESS_RULE_MISSING: Code.PermissionDenied,
  MALFORMED_REQUEST: Code.InvalidArgument,
  UNKNOWN_FIELD: Code.InvalidArgument,
  UNKNOWN_ENUM_VALUE: Code.InvalidArgument,
  INVALID_FIELD: Code.InvalidArgument,
  INVALID_UPDATE_MASK: Code.InvalidArgument,
  INVALID_REQUEST: Code.InvalidArgument,
  UNSUPPORTED_CONTENT_TYPE: Code.InvalidArgument,
  REQUEST_TOO_LARGE: Code.ResourceExhausted,
  NOT_FOUND: Code.NotFound,
  ALREADY_EXISTS: Code.AlreadyExists,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  CONCURRENT_UPDATE: Code.Aborted,
  DATABASE_UNAVAILABLE: Code.Unavailable,
  RATE_LIMIT_UNAVAILABLE: Code.Unavailable,
  UNAVAILABLE: Code.Unavailable,
  RESOURCE_EXHAUSTED: Code.ResourceExhausted,
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
  CANCELED: Code.Canceled,
  UNIMPLEMENTED: Code.Unimplemented,
  OUT_OF_RANGE: Code.OutOfRange,
  DATA_LOSS: Code.DataLoss,
  UNKNOWN: Code.Unknown,
  INTERNAL: Code.Internal,
} as const satisfies Record<string, Code>;

/** An ErrorInfo reason of this service. */
export type Reason = keyof typeof REASONS;

/** The reason of an error nothing more specific describes, by code. */
const REASON_BY_CODE: Record<Code, Reason> = {
  [Code.Canceled]: "CANCELED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_REQUEST",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_MISSING",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "CONCURRENT_UPDATE",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "API_KEY_INVALID",
};

/** What an error says beyond its reason. */
export interface ErrorFacts {
  /** ErrorInfo metadata (the field, the missing permissions, ...). */
  metadata?: Record<string, string>;
  /** The request field at fault: the BadRequest field violation of an invalid_argument. */
  field?: string;
  /** When the caller may retry: a RetryInfo detail. */
  retryAfterMs?: number;
  cause?: unknown;
}

/**
 * The one way this service makes an error: the reason's code, the message as
 * given, and its details: ErrorInfo always, BadRequest for invalid_argument,
 * RetryInfo when a retry time is known.
 */
export function apiError(reason: Reason, message: string, facts: ErrorFacts = {}): ConnectError {
  const code = REASONS[reason];
  const metadata = { ...(facts.field === undefined || facts.field === "" ? {} : { field: facts.field }), ...facts.metadata };
  const details: ConnectError["details"] = [{ desc: ErrorInfoSchema, value: { reason, domain: ERROR_DOMAIN, metadata } }];
  if (code === Code.InvalidArgument) {
    details.push({
      desc: BadRequestSchema,
      value: { fieldViolations: [{ field: facts.field ?? "", description: message, reason }] },
    });
  }
  if (facts.retryAfterMs !== undefined) {
    const ms = Math.max(0, Math.ceil(facts.retryAfterMs));
    details.push({
      desc: RetryInfoSchema,
      value: { retryDelay: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 } },
    });
  }
  // Retry-After rides as error metadata: a response header on Connect and REST (HTTP 429).
  const headers = facts.retryAfterMs === undefined ? undefined : { "retry-after": String(Math.max(1, Math.ceil(facts.retryAfterMs / 1000))) };
  const error = new ConnectError(message, code, headers, undefined, facts.cause);
  error.details = details;
  return error;
}

/** The ErrorInfo reason an error carries (from apiError, or decoded from the wire), if any. */
export function reasonOf(error: ConnectError): string | undefined {
  return error.findDetails(ErrorInfoSchema)[0]?.reason;
}

/**
 * The snake_case field a validation message starts with (`name must ...`,
 * `metadata["k"]: ...`, `rate_limit.requests must ...`), or undefined.
 */
function leadingField(message: string): string | undefined {
  return /^([a-z][a-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?=:| must | is | values |\[)/.exec(message)?.[1];
}

/**
 * Classifies what the protobuf JSON/binary decoders and the RPC protocols say
 * when they refuse a request (their messages are all we get), so that a refusal
 * from the codec and one from a handler carry the same reasons.
 */
function classify(code: Code, message: string): { reason: Reason; facts: ErrorFacts } {
  if (code === Code.InvalidArgument) {
    const unknownKey = /cannot decode message (\S+) from JSON: key "(.*)" is unknown/.exec(message);
    if (unknownKey) return { reason: "UNKNOWN_FIELD", facts: { field: unknownKey[2], metadata: { message: unknownKey[1]! } } };
    const unknownParameter = /unknown query parameter "(.*)"/.exec(message);
    if (unknownParameter) return { reason: "UNKNOWN_FIELD", facts: { field: unknownParameter[1] } };
    const badEnum = /cannot decode enum (\S+) from JSON: (.*)$/.exec(message);
    if (badEnum) {
      // The decoder quotes a string value; the metadata holds the value as sent.
      const value = badEnum[2]!.replace(/^"(.*)"$/, "$1").slice(0, 100);
      return { reason: "UNKNOWN_ENUM_VALUE", facts: { metadata: { enum: badEnum[1]!, value } } };
    }
    const badField = /cannot decode field (\S+) from JSON/.exec(message);
    if (badField) {
      const path = badField[1]!;
      return { reason: "INVALID_FIELD", facts: { field: path.slice(path.lastIndexOf(".") + 1), metadata: { message: path.slice(0, path.lastIndexOf(".")) } } };
    }
    if (/^unsupported content type/.test(message)) return { reason: "UNSUPPORTED_CONTENT_TYPE", facts: {} };
    if (/cannot decode|parse binary|malformed|not valid JSON|not valid for encoding|decompress|compressed envelope|protocol error/i.test(message)) {
      return { reason: "MALFORMED_REQUEST", facts: {} };
    }
    const field = leadingField(message);
    return field === undefined ? { reason: "INVALID_REQUEST", facts: {} } : { reason: "INVALID_FIELD", facts: { field } };
  }
  if (code === Code.ResourceExhausted && /readMaxBytes|exceeds \d+ bytes/.test(message)) {
    return { reason: "REQUEST_TOO_LARGE", facts: {} };
  }
  return { reason: REASON_BY_CODE[code] ?? "UNKNOWN", facts: {} };
}

/**
 * Gives an error that has no ErrorInfo the details of its kind (see classify);
 * an error made by apiError keeps its own. Applied where errors leave the
 * service (handlers, the RPC protocols, REST), so every error has details.
 */
export function withErrorDetails(error: ConnectError): ConnectError {
  if (reasonOf(error) !== undefined) return error;
  const { reason, facts } = classify(error.code, error.rawMessage);
  const detailed = apiError(reason, error.rawMessage, { ...facts, cause: error.cause });
  return withCode(error, error.code, detailed.details);
}

/** A copy of an error with another code and more details (ConnectError's constructor takes only outgoing ones). */
export function withCode(error: ConnectError, code: Code, moreDetails: ConnectError["details"] = []): ConnectError {
  const copy = new ConnectError(error.rawMessage, code, error.metadata, undefined, error.cause);
  copy.details = [...error.details, ...moreDetails];
  return copy;
}

/**
 * A refusal raised below the RPC layer (domain services, validation, the
 * verifier): a reason of this service, a message for the caller and the facts
 * behind it. It knows nothing of Connect; the error interceptor turns it into
 * the ConnectError of its reason (see `apiError`), on every protocol alike.
 */
export class ApiError extends Error {
  override readonly name = "ApiError";

  constructor(
    readonly reason: Reason,
    message: string,
    readonly facts: ErrorFacts = {},
  ) {
    super(message, facts.cause === undefined ? undefined : { cause: facts.cause });
  }

  /** The Connect code of its reason. */
  get code(): Code {
    return REASONS[this.reason];
  }
}

/**
 * An invalid_argument refusal about `field`; without one, classified by its
 * message like a codec's refusal (INVALID_FIELD for the field it starts with,
 * else INVALID_REQUEST).
 */
export function invalidArgument(message: string, field?: string): ApiError {
  if (field !== undefined) return new ApiError("INVALID_FIELD", message, { field });
  const { reason, facts } = classify(Code.InvalidArgument, message);
  return new ApiError(reason, message, facts);
}

/** A not_found refusal. */
export function notFound(message: string): ApiError {
  return new ApiError("NOT_FOUND", message);
}

/** A permission_denied refusal: the caller may not do this (no-escalation and consumer-scope rules). */
export function permissionDenied(message: string): ApiError {
  return new ApiError("PERMISSION_MISSING", message);
}

/** A failed_precondition refusal: the request is sound but the state does not allow it. */
export function failedPrecondition(message: string): ApiError {
  return new ApiError("FAILED_PRECONDITION", message);
}

/** An aborted refusal: a concurrent change got in the way; retrying may succeed. */
export function concurrentUpdate(message: string): ApiError {
  return new ApiError("CONCURRENT_UPDATE", message);
}

/** An unauthenticated refusal of the caller's own credential. */
export function unauthenticated(message: string, reason: Reason = "API_KEY_INVALID"): ApiError {
  return new ApiError(reason, message);
}

/** The snake_case name of a Connect code ("ok" for 0), as logs and the audit log write it. */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? String(code);
}

const CODE_NAMES = ["ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated"];
