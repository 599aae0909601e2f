import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client, type Interceptor, type Transport, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ApiKeysAdminService } from "./gen/apikeys/v1/admin_pb.js";
import { ApiKeysService } from "./gen/apikeys/v1/api_keys_pb.js";

/** How to reach the apikeys service. */
export interface ClientOptions {
  /** e.g. "http://apikeys.internal:5000". */
  baseUrl: string;
  /** This service's own API key, sent as `Authorization: Bearer`. */
  token: string;
  /** Deadline of each unary call, retries included; streams have none. Default 5 s. */
  timeoutMs?: number;
  /** Attempts for idempotent calls that fail with `unavailable`. Default 3. */
  maxAttempts?: number;
  /** Default "2" (cleartext HTTP/2: one connection carries the stream and every call). */
  httpVersion?: "1.1" | "2";
  /** Extra interceptors, run inside the auth and retry ones. */
  interceptors?: Interceptor[];
}

/** Typed clients for both apikeys services over one transport. */
export interface ApiKeysClients {
  apiKeys: Client<typeof ApiKeysService>;
  admin: Client<typeof ApiKeysAdminService>;
  transport: Transport;
}

const DEFAULT_TIMEOUT_MS = 5_000;
const DEFAULT_MAX_ATTEMPTS = 3;
const RETRY_BASE_MS = 50;

/** Creates clients with a deadline on every unary call and retries only where the method is idempotent. */
export function createApiKeysClients(options: ClientOptions): ApiKeysClients {
  const transport = createConnectTransport({
    baseUrl: options.baseUrl,
    httpVersion: options.httpVersion ?? "2",
    defaultTimeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    interceptors: [
      bearerToken(options.token),
      retryIdempotent(options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS),
      ...(options.interceptors ?? []),
    ],
  });
  return {
    apiKeys: createClient(ApiKeysService, transport),
    admin: createClient(ApiKeysAdminService, transport),
    transport,
  };
}

function bearerToken(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/**
 * Retries unary calls whose method is declared idempotent (or free of side
 * effects) when the server was unavailable; everything else fails at once, since
 * repeating it could apply it twice.
 */
export function retryIdempotent(maxAttempts: number): Interceptor {
  return (next) => async (req) => {
    const idempotent = req.method.idempotency !== MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN;
    if (req.stream || !idempotent) return next(req);
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (err) {
        const error = ConnectError.from(err);
        if (error.code !== Code.Unavailable || attempt >= maxAttempts || req.signal.aborted) throw error;
        await delay(RETRY_BASE_MS * 2 ** (attempt - 1) * (0.5 + Math.random()), req.signal);
      }
    }
  };
}

/** Resolves after `ms`, or at once when `signal` aborts (the next attempt then fails on it). */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
