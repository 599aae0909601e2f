import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { Code, ConnectError, type ContextValues, type Interceptor, createContextKey, createContextValues } from "@connectrpc/connect";
import { REFUSALS, tokenFromHeaders } from "../auth/auth-interceptor.js";
import { methodRequirement } from "../permissions/declarations.js";
import { KeyVerifier, type KeyVerifierOptions, missingPermissions } from "./key-verifier.js";
import type { VerifiedKey } from "./verification-cache.js";

/** The key that authenticated the current call; undefined for public methods. */
export const verifiedKey = createContextKey<VerifiedKey | undefined>(undefined, {
  description: "API key verified by apikeys",
});

/** The caller's address, checked against keys limited to CIDRs; see `clientAddressContext`. */
export const clientAddress = createContextKey<string | undefined>(undefined, {
  description: "remote address of the caller",
});

/**
 * Context values carrying the caller's socket address; pass as
 * `connectNodeAdapter({ contextValues: clientAddressContext })`.
 */
export function clientAddressContext(req: IncomingMessage | Http2ServerRequest): ContextValues {
  const address = req.socket.remoteAddress;
  // Dual-stack sockets report IPv4 callers as IPv4-mapped IPv6.
  return createContextValues().set(clientAddress, address?.startsWith("::ffff:") ? address.slice(7) : address);
}

export interface ApiKeyAuthOptions extends Omit<KeyVerifierOptions, "client"> {
  /** Client of ApiKeysService (see createApiKeysClients); used unless `verifier` is given. */
  client?: KeyVerifierOptions["client"];
  /** A verifier to share between several servers. */
  verifier?: KeyVerifier;
}

/** A Connect interceptor that also owns the verifier behind it. */
export type ApiKeyAuth = Interceptor & {
  readonly verifier: KeyVerifier;
  /** Stops the verifier's invalidation stream (unless the verifier was passed in). */
  close(): Promise<void>;
};

/**
 * Protects a Connect server: reads the caller's key from `Authorization: Bearer`
 * or `x-api-key`, verifies it, enforces the method's `(apikeys.v1.auth)` option,
 * and puts the key into `verifiedKey` for the handler.
 */
export function apiKeyAuth(options: ApiKeyAuthOptions): ApiKeyAuth {
  let verifier = options.verifier;
  const owned = verifier === undefined;
  if (verifier === undefined) {
    if (options.client === undefined) throw new TypeError("apiKeyAuth needs a client or a verifier");
    verifier = new KeyVerifier({ ...options, client: options.client });
  }
  const keys = verifier;
  const interceptor: Interceptor = (next) => async (req) => {
    const requirement = methodRequirement(req.method);
    if (requirement.kind === "public") return next(req);
    if (requirement.kind === "undeclared") {
      // Fail closed: a method nobody classified is callable by nobody.
      throw new ConnectError(`${req.method.name} has no access rule`, Code.PermissionDenied);
    }
    const token = tokenFromHeaders(req.header);
    if (token === undefined) {
      throw new ConnectError("missing API key: send 'Authorization: Bearer <token>' or 'x-api-key: <token>'", Code.Unauthenticated);
    }
    const verdict = await keys.verify(token, req.contextValues.get(clientAddress));
    if (!verdict.valid) throw new ConnectError(REFUSALS[verdict.code] ?? "invalid API key", Code.Unauthenticated);
    if (requirement.kind === "permissions") {
      const missing = missingPermissions(verdict.permissionSet, requirement.allOf, requirement.anyOf);
      if (missing.length > 0) {
        throw new ConnectError(`API key lacks permission${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`, Code.PermissionDenied);
      }
    }
    req.contextValues.set(verifiedKey, verdict.key);
    return next(req);
  };
  return Object.assign(interceptor, {
    verifier: keys,
    close: async () => {
      if (owned) await keys.close();
    },
  });
}
