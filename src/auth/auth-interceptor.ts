import { MISSING_KEY, REFUSALS, lacksPermissions, tokenFromHeaders } from "@apikeys/client";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
import { methodRequirement } from "../permissions/declarations.js";
import type { Verifier } from "../verify/verifier.js";
import { authenticatedKey, peerAddress } from "./auth-context.js";

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
      throw new ConnectError(
        `too many failed authentication attempts from this address; retry in ${Math.ceil(retryAfterMs / 1000)}s`,
        Code.ResourceExhausted,
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
      throw new ConnectError(MISSING_KEY, Code.Unauthenticated);
    }
    const verdict =
      requirement.kind === "permissions"
        ? await verifier.verify(token, requirement.allOf, requirement.anyOf, peer)
        : await verifier.verify(token, [], [], peer);
    if (verdict.code === VerifyCode.INSUFFICIENT_PERMISSIONS) {
      throw new ConnectError(lacksPermissions(verdict.missing), Code.PermissionDenied);
    }
    if (verdict.code !== VerifyCode.VALID) {
      if (verdict.code === VerifyCode.NOT_FOUND) verifier.failures.recordFailure(peer);
      throw new ConnectError(REFUSALS[verdict.code] ?? "invalid API key", Code.Unauthenticated);
    }
    req.contextValues.set(authenticatedKey, verdict.key);
    return next(req);
  };
}
