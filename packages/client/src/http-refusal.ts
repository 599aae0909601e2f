import { Code, ConnectError } from "@connectrpc/connect";

/** An HTTP answer to a refused call: status, headers and a `google.rpc.Status` JSON body. */
export interface HttpRefusal {
  status: number;
  headers: Record<string, string>;
  body: { code: number; message: string; details: unknown[] };
}

const STATUS: Partial<Record<Code, number>> = {
  [Code.Unauthenticated]: 401,
  [Code.PermissionDenied]: 403,
  [Code.Unavailable]: 503,
};

/**
 * Maps an `authorize` error to HTTP: 401 with `WWW-Authenticate: Bearer` (RFC 6750),
 * 403 naming the missing permissions, 503 when apikeys cannot be asked.
 */
export function httpRefusal(error: ConnectError): HttpRefusal {
  const status = STATUS[error.code] ?? 500;
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (error.code === Code.Unauthenticated) headers["www-authenticate"] = 'Bearer realm="apikeys"';
  if (error.code === Code.PermissionDenied) headers["www-authenticate"] = 'Bearer realm="apikeys", error="insufficient_scope"';
  return { status, headers, body: { code: error.code, message: error.rawMessage, details: [] } };
}

/** The refusal for `err` when it is one `authorize` throws; undefined for anything else (a bug to pass on). */
export function refusalOf(err: unknown): HttpRefusal | undefined {
  return err instanceof ConnectError ? httpRefusal(err) : undefined;
}
