/**
 * `@apikeys/client/fastify`: protects Fastify routes with an apikeys key, as a
 * route `preHandler` or as a plugin covering every route of its scope.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import { authorize, plainAddress, requirementOf } from "./authorize.js";
import { tokenFromHeaderValues } from "./credentials.js";
import { refusalOf } from "./http-refusal.js";
import type { KeyVerifier } from "./key-verifier.js";
import type { VerifiedKey } from "./verification-cache.js";

export type { VerifiedKey } from "./verification-cache.js";

declare module "fastify" {
  interface FastifyRequest {
    /** The caller's key, set by apikeys' preHandler. */
    apiKey?: VerifiedKey | undefined;
  }
}

export interface ApiKeyPreHandlerOptions {
  /** Shared by every hook of the process (one invalidation stream, one cache). */
  verifier: KeyVerifier;
  /** Canonical permissions the key must all hold. */
  allOf?: readonly string[] | undefined;
  /** Canonical permissions of which the key must hold at least one. Neither: any valid key. */
  anyOf?: readonly string[] | undefined;
  /** The caller's address, checked against keys limited to CIDRs. Default: `request.ip`. */
  clientIp?: ((request: FastifyRequest) => string | undefined) | undefined;
}

/** Resolves to the reply when it answered the request itself (Fastify then stops there). */
export type ApiKeyPreHandler = (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined>;

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * A `preHandler` hook: replies 401 (with `WWW-Authenticate: Bearer`) without a
 * key or with a refused one, 403 when the key lacks a permission, both with a
 * `google.rpc.Status` JSON body; otherwise sets `request.apiKey`.
 */
export function apiKeyPreHandler(options: ApiKeyPreHandlerOptions): ApiKeyPreHandler {
  const requirement = requirementOf(options);
  const clientIp = options.clientIp ?? ((request: FastifyRequest) => plainAddress(request.ip));
  return async (request, reply) => {
    try {
      request.apiKey = await authorize(
        options.verifier,
        requirement,
        () => tokenFromHeaderValues(request.headers.authorization, header(request.headers["x-api-key"])),
        clientIp(request),
        `${request.method} ${request.url}`,
      );
      return undefined;
    } catch (err) {
      const refusal = refusalOf(err);
      if (refusal === undefined) throw err;
      return reply.code(refusal.status).headers(refusal.headers).send(refusal.body);
    }
  };
}

/**
 * A plugin adding the preHandler to every route of the scope it is registered
 * in (it does not encapsulate itself, like plugins wrapped in fastify-plugin):
 * `app.register(apiKeyPlugin, { verifier, allOf: ["svc:read"] })`.
 */
export const apiKeyPlugin: FastifyPluginAsync<ApiKeyPreHandlerOptions> = Object.assign(
  async (app: Parameters<FastifyPluginAsync<ApiKeyPreHandlerOptions>>[0], options: ApiKeyPreHandlerOptions) => {
    app.decorateRequest("apiKey", undefined);
    app.addHook("preHandler", apiKeyPreHandler(options));
  },
  // Fastify's documented flag for a plugin that shares its parent's scope.
  { [Symbol.for("skip-override")]: true },
);
