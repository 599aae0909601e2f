import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { type ContextValues, type Interceptor, createContextKey, createContextValues } from "@connectrpc/connect";
import { authorize, plainAddress } from "./authorize.js";
import { tokenFromHeaders } from "./credentials.js";
import { KeyVerifier, type KeyVerifierOptions } from "./key-verifier.js";
import { methodRequirement } from "./requirements.js";
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
  return createContextValues().set(clientAddress, plainAddress(req.socket.remoteAddress));
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
    const key = await authorize(keys, requirement, () => tokenFromHeaders(req.header), req.contextValues.get(clientAddress), req.method.name);
    req.contextValues.set(verifiedKey, key);
    return next(req);
  };
  return Object.assign(interceptor, {
    verifier: keys,
    close: async () => {
      if (owned) await keys.close();
    },
  });
}
