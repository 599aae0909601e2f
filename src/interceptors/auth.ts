import { MISSING_KEY, REFUSALS, lacksPermissions, tokenFromHeaderValues } from "@apikeys/client";
import type { DescMethod } from "@bufbuild/protobuf";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { type Reason, apiError } from "../errors.js";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
import { methodRequirement } from "../permissions/declarations.js";
import type { Verdict, Verifier } from "../verify/verifier.js";
import { authenticatedKey, peerAddress } from "../auth/auth-context.js";
import type { KeyRecord } from "../keys/key-record.js";

/** The ErrorInfo reason of each refusal. */
const REFUSAL_REASONS: Partial<Record<VerifyCode, Reason>> = {
  [VerifyCode.NOT_FOUND]: "API_KEY_INVALID",
  [VerifyCode.DISABLED]: "API_KEY_DISABLED",
  [VerifyCode.EXPIRED]: "API_KEY_EXPIRED",
  [VerifyCode.IP_NOT_ALLOWED]: "API_KEY_IP_NOT_ALLOWED",
  [VerifyCode.RATE_LIMITED]: "API_KEY_RATE_LIMITED",
  [VerifyCode.USAGE_EXCEEDED]: "API_KEY_USAGE_EXCEEDED",
};

/**
 * Verdicts that show the presenter holds no credential (an unknown or malformed
 * token, a JWT whose signature does not verify): what guessing produces. A real
 * key that is disabled, expired or out of its grants is no guess.
 */
export function isGuess(code: VerifyCode): boolean {
  return code === VerifyCode.NOT_FOUND || code === VerifyCode.SIGNATURE_INVALID;
}

/**
 * Throws AUTH_THROTTLED for a call to a method that needs a key from a peer
 * address that has failed authentication too often (see `authenticate`).
 */
export function refuseIfThrottled(verifier: Verifier, method: DescMethod, peer: string): void {
  if (methodRequirement(method).kind === "public") return;
  const retryAfterMs = verifier.failures.retryAfterMs(peer);
  if (retryAfterMs > 0) {
    throw apiError("AUTH_THROTTLED", `too many failed authentication attempts from this address; retry in ${Math.ceil(retryAfterMs / 1000)}s`, {
      retryAfterMs,
    });
  }
}

/**
 * Refuses every call that `refuseIfThrottled` refuses, before anything else
 * runs: it is installed ahead of the audit log, so a blocked peer writes nothing.
 */
export function failureThrottleInterceptor(verifier: Verifier): Interceptor {
  return (next) => async (req) => {
    refuseIfThrottled(verifier, req.method, req.contextValues.get(peerAddress));
    return next(req);
  };
}

/** Reads one request header as `Headers.get` does (values trimmed, repeats joined). */
export interface HeaderReader {
  get(name: string): string | null;
}

/**
 * Enforces `method`'s `(apikeys.v1.auth)` requirement with the server's own
 * verifier and returns the verified key (undefined for a public method).
 * `headers` reads request headers as `Headers.get` does. Every failed
 * authentication of the caller — no key, a malformed header, a guess — counts
 * against its peer address (never an address the request names). What it refuses
 * is thrown at once, or rejected when the verdict needed I/O.
 */
export function authenticate(verifier: Verifier, method: DescMethod, headers: HeaderReader, peer: string): KeyRecord | undefined | Promise<KeyRecord | undefined> {
  const requirement = methodRequirement(method);
  if (requirement.kind === "public") return undefined;
  if (requirement.kind === "undeclared") {
    // Fail closed: a method nobody classified is callable by nobody.
    throw apiError("ACCESS_RULE_MISSING", `${method.name} has no access rule`, { metadata: { method: method.name } });
  }
  // A key presented to this service directly is held to its CIDRs by the caller's own address.
  let token: string | undefined;
  try {
    token = tokenFromHeaderValues(headers.get("authorization") ?? undefined, headers.get("x-api-key") ?? undefined);
  } catch (err) {
    verifier.failures.recordFailure(peer);
    throw apiError("AUTHORIZATION_MALFORMED", ConnectError.from(err).rawMessage);
  }
  if (token === undefined) {
    verifier.failures.recordFailure(peer);
    throw apiError("API_KEY_MISSING", MISSING_KEY);
  }
  const verdict = requirement.kind === "permissions" ? verifier.verify(token, requirement.allOf, requirement.anyOf, peer) : verifier.verify(token, [], [], peer);
  // A cached key is judged without a promise (see Verifier.verify).
  return verdict instanceof Promise ? verdict.then((v) => admitted(verifier, v, peer)) : admitted(verifier, verdict, peer);
}

/** The caller's key when its verdict lets it in; else the error the call ends with. */
function admitted(verifier: Verifier, verdict: Verdict, peer: string): KeyRecord | undefined {
  if (verdict.code === VerifyCode.INSUFFICIENT_PERMISSIONS) {
    throw apiError("PERMISSION_MISSING", lacksPermissions(verdict.missing), {
      metadata: { permissions: verdict.missing.join(",") },
    });
  }
  if (verdict.code !== VerifyCode.VALID) {
    if (isGuess(verdict.code)) verifier.failures.recordFailure(peer);
    throw apiError(REFUSAL_REASONS[verdict.code] ?? "API_KEY_INVALID", REFUSALS[verdict.code] ?? "invalid API key");
  }
  return verdict.key;
}

/** `authenticate` as an interceptor: the verified key goes into the call's context values. */
export function authInterceptor(verifier: Verifier): Interceptor {
  return (next) => async (req) => {
    const key = await authenticate(verifier, req.method, req.header, req.contextValues.get(peerAddress));
    if (key !== undefined) req.contextValues.set(authenticatedKey, key);
    return next(req);
  };
}
