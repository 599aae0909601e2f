import { MISSING_KEY, REFUSALS, lacksPermissions, tokenFromHeaders } from "@apikeys/client";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { type Reason, apiError } from "../errors.js";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
import { methodRequirement } from "../permissions/declarations.js";
import type { Verifier } from "../verify/verifier.js";
import { authenticatedKey, peerAddress } from "../auth/auth-context.js";

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
 * Refuses every call to a method that needs a key from a peer address that has
 * failed authentication too often (see `authInterceptor`), before anything else
 * runs: it is installed ahead of the audit log, so a blocked peer writes nothing.
 */
export function failureThrottleInterceptor(verifier: Verifier): Interceptor {
  return (next) => async (req) => {
    if (methodRequirement(req.method).kind === "public") return next(req);
    const retryAfterMs = verifier.failures.retryAfterMs(req.contextValues.get(peerAddress));
    if (retryAfterMs > 0) {
      throw apiError("AUTH_THROTTLED", `too many failed authentication attempts from this address; retry in ${Math.ceil(retryAfterMs / 1000)}s`, {
        retryAfterMs,
      });
    }
    return next(req);
  };
}

/**
 * Enforces each method's `(apikeys.v1.auth)` requirement with the server's own
 * verifier, and puts the verified key into the call's context values. Every
 * failed authentication of the caller — no key, a malformed header, a guess —
 * counts against its peer address (never an address the request names).
 */
export function authInterceptor(verifier: Verifier): Interceptor {
  return (next) => async (req) => {
    const requirement = methodRequirement(req.method);
    if (requirement.kind === "public") return next(req);
    if (requirement.kind === "undeclared") {
      // Fail closed: a method nobody classified is callable by nobody.
      throw apiError("ACCESS_RULE_MISSING", `${req.method.name} has no access rule`, { metadata: { method: req.method.name } });
    }
    // A key presented to this service directly is held to its CIDRs by the caller's own address.
    const peer = req.contextValues.get(peerAddress);
    let token: string | undefined;
    try {
      token = tokenFromHeaders(req.header);
    } catch (err) {
      verifier.failures.recordFailure(peer);
      throw apiError("AUTHORIZATION_MALFORMED", ConnectError.from(err).rawMessage);
    }
    if (token === undefined) {
      verifier.failures.recordFailure(peer);
      throw apiError("API_KEY_MISSING", MISSING_KEY);
    }
    const verdict =
      requirement.kind === "permissions"
        ? await verifier.verify(token, requirement.allOf, requirement.anyOf, peer)
        : await verifier.verify(token, [], [], peer);
    if (verdict.code === VerifyCode.INSUFFICIENT_PERMISSIONS) {
      throw apiError("PERMISSION_MISSING", lacksPermissions(verdict.missing), {
        metadata: { permissions: verdict.missing.join(",") },
      });
    }
    if (verdict.code !== VerifyCode.VALID) {
      if (isGuess(verdict.code)) verifier.failures.recordFailure(peer);
      throw apiError(REFUSAL_REASONS[verdict.code] ?? "API_KEY_INVALID", REFUSALS[verdict.code] ?? "invalid API key");
    }
    req.contextValues.set(authenticatedKey, verdict.key);
    return next(req);
  };
}
