import { Code, ConnectError } from "@connectrpc/connect";
import { VerifyCode } from "./gen/apikeys/v1/api_keys_pb.js";

/** Told to a caller that presented no key at all. */
export const MISSING_KEY = "missing API key: send 'Authorization: Bearer <token>' or 'x-api-key: <token>'";

/**
 * Why a refused token was refused, as the caller is told (the server and every
 * adapter say the same). Keyed by VerifyCode; codes not listed read "invalid API key".
 */
export const REFUSALS: Readonly<Partial<Record<number, string>>> = {
  [VerifyCode.NOT_FOUND]: "invalid API key",
  [VerifyCode.DISABLED]: "API key is disabled",
  [VerifyCode.EXPIRED]: "API key has expired",
  [VerifyCode.IP_NOT_ALLOWED]: "API key may not be used from this address",
  [VerifyCode.RATE_LIMITED]: "API key is over its rate limit",
  [VerifyCode.USAGE_EXCEEDED]: "API key has no credits left",
};

/** The refusal told to a caller whose key lacks `missing` (non-empty). */
export function lacksPermissions(missing: readonly string[]): string {
  return `API key lacks permission${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`;
}

/**
 * Reads the token from `Authorization: Bearer <token>` or `x-api-key: <token>`;
 * undefined when neither is sent. Throws `unauthenticated` when `Authorization`
 * is sent in another form.
 */
export function tokenFromHeaders(headers: Headers): string | undefined {
  return tokenFromHeaderValues(headers.get("authorization") ?? undefined, headers.get("x-api-key") ?? undefined);
}

/** tokenFromHeaders for frameworks that hand over header values (e.g. node:http's `req.headers`). */
export function tokenFromHeaderValues(authorization: string | undefined, apiKey: string | undefined): string | undefined {
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match === null) {
      throw new ConnectError("Authorization header must be 'Bearer <token>'", Code.Unauthenticated);
    }
    return match[1];
  }
  return apiKey === undefined || apiKey.trim() === "" ? undefined : apiKey.trim();
}
