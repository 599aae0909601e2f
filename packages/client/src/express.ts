/**
 * `@apikeys/client/express`: protects Express (or Connect-style, or plain
 * `node:http`) handlers with an apikeys key.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { authorize, plainAddress, requirementOf } from "./authorize.js";
import { tokenFromHeaderValues } from "./credentials.js";
import { refusalOf } from "./http-refusal.js";
import type { KeyVerifier } from "./key-verifier.js";
import type { VerifiedKey } from "./verification-cache.js";

export type { HttpRefusal } from "./http-refusal.js";
export type { VerifiedKey } from "./verification-cache.js";

export interface ApiKeyMiddlewareOptions {
  /** Shared by every middleware of the process (one invalidation stream, one cache). */
  verifier: KeyVerifier;
  /** Canonical permissions the key must all hold. */
  allOf?: readonly string[] | undefined;
  /** Canonical permissions of which the key must hold at least one. Neither: any valid key. */
  anyOf?: readonly string[] | undefined;
  /**
   * The caller's address, checked against keys limited to CIDRs. Default: the
   * socket's peer; behind a trusted proxy, read it from the proxy's header here.
   */
  clientIp?: ((req: IncomingMessage) => string | undefined) | undefined;
}

/** A request that went through the middleware: `apiKey` is the caller's verified key. */
export type ApiKeyRequest = IncomingMessage & { apiKey?: VerifiedKey | undefined };

export type ApiKeyMiddleware = (req: ApiKeyRequest, res: ServerResponse, next: (err?: unknown) => void) => void;

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * `(req, res, next)` middleware: answers 401 (with `WWW-Authenticate: Bearer`)
 * without a key or with a refused one, 403 when the key lacks a permission
 * (the message names them), both with a `google.rpc.Status` JSON body
 * `{code, message, details}`; otherwise sets `req.apiKey` and calls `next()`.
 */
export function apiKeyMiddleware(options: ApiKeyMiddlewareOptions): ApiKeyMiddleware {
  const requirement = requirementOf(options);
  const clientIp = options.clientIp ?? ((req: IncomingMessage) => plainAddress(req.socket.remoteAddress));
  return (req, res, next) => {
    authorize(
      options.verifier,
      requirement,
      () => tokenFromHeaderValues(req.headers.authorization, header(req.headers["x-api-key"])),
      clientIp(req),
      `${req.method ?? ""} ${req.url ?? ""}`,
    ).then(
      (key) => {
        req.apiKey = key;
        next();
      },
      (err: unknown) => {
        const refusal = refusalOf(err);
        if (refusal === undefined) return next(err);
        res.writeHead(refusal.status, refusal.headers).end(JSON.stringify(refusal.body));
      },
    );
  };
}
