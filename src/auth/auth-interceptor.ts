import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
import { methodRequirement } from "../permissions/declarations.js";
import type { Verifier } from "../verify/verifier.js";
import { authenticatedKey, peerAddress } from "./auth-context.js";

/** Reads the token from `Authorization: Bearer <token>` or `x-api-key: <token>`. */
export function tokenFromHeaders(headers: Headers): string | undefined {
  const authorization = headers.get("authorization");
  if (authorization !== null) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match === null) {
      throw new ConnectError("Authorization header must be 'Bearer <token>'", Code.Unauthenticated);
    }
    return match[1];
  }
  const apiKey = headers.get("x-api-key");
  return apiKey === null || apiKey.trim() === "" ? undefined : apiKey.trim();
}

/** Why a refused token was refused, as the caller is told (the SDK says the same). */
export const REFUSALS: Partial<Record<VerifyCode, string>> = {
  [VerifyCode.NOT_FOUND]: "invalid API key",
  [VerifyCode.DISABLED]: "API key is disabled",
  [VerifyCode.EXPIRED]: "API key has expired",
  [VerifyCode.IP_NOT_ALLOWED]: "API key may not be used from this address",
  [VerifyCode.RATE_LIMITED]: "API key is over its rate limit",
};

/**
 * Enforces each method's `(apikeys.v1.auth)` requirement with the server's own
 * verifier, and puts the verified key into the call's context values.
 */
export function authInterceptor(verifier: Verifier): Interceptor {
  return (next) => async (req) => {
    const requirement = methodRequirement(req.method);
    if (requirement.kind === "public") return next(req);
    if (requirement.kind === "undeclared") {
      // Fail closed: a method nobody classified is callable by nobody.
      throw new ConnectError(`${req.method.name} has no access rule`, Code.PermissionDenied);
    }
    // A key presented to this service directly is held to its CIDRs by the caller's own address.
    const peer = req.contextValues.get(peerAddress);
    const hasCredentials = req.header.has("authorization") || req.header.has("x-api-key");
    const retryAfterMs = hasCredentials ? verifier.failures.retryAfterMs(peer) : 0;
    if (retryAfterMs > 0) {
      const seconds = Math.ceil(retryAfterMs / 1000);
      // Retry-After rides as error metadata: a response header on Connect and REST (HTTP 429).
      throw new ConnectError(
        `too many failed authentication attempts from this address; retry in ${seconds}s`,
        Code.ResourceExhausted,
        { "retry-after": String(seconds) },
      );
    }
    let token: string | undefined;
    try {
      token = tokenFromHeaders(req.header);
    } catch (err) {
      verifier.failures.recordFailure(peer);
      throw err;
    }
    if (token === undefined) {
      throw new ConnectError("missing API key: send 'Authorization: Bearer <token>' or 'x-api-key: <token>'", Code.Unauthenticated);
    }
    const verdict =
      requirement.kind === "permissions"
        ? await verifier.verify(token, requirement.allOf, requirement.anyOf, peer)
        : await verifier.verify(token, [], [], peer);
    if (verdict.code === VerifyCode.INSUFFICIENT_PERMISSIONS) {
      throw new ConnectError(
        `API key lacks permission${verdict.missing.length > 1 ? "s" : ""} ${verdict.missing.join(", ")}`,
        Code.PermissionDenied,
      );
    }
    if (verdict.code !== VerifyCode.VALID) {
      if (verdict.code === VerifyCode.NOT_FOUND) verifier.failures.recordFailure(peer);
      throw new ConnectError(REFUSALS[verdict.code] ?? "invalid API key", Code.Unauthenticated);
    }
    req.contextValues.set(authenticatedKey, verdict.key);
    return next(req);
  };
}
