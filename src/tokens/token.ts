import { createHmac, hash } from "node:crypto";

// The token format (and its checksum) is shared with the SDK, which refuses malformed tokens offline.
export { SECRET_LENGTH, generateToken, parseToken } from "@apikeys/client";
import { generateToken } from "@apikeys/client";

/** The stored form of a token: SHA-256, or HMAC-SHA256 with the server pepper. */
export function hashToken(token: string, pepper: string | undefined): Buffer {
  return pepper === undefined
    ? // One-shot crypto.hash: a third of createHash's cost on the verify path.
      hash("sha256", token, "buffer")
    : createHmac("sha256", pepper).update(token).digest();
}

const lengths = new Map<string, number>();

/** The length of every well-formed token with `prefix` (the format's, measured once). */
export function tokenLength(prefix: string): number {
  let length = lengths.get(prefix);
  if (length === undefined) lengths.set(prefix, (length = generateToken(prefix).length));
  return length;
}

/** `hashToken` as base64 (the verifier's cache key), in one call when there is no pepper. */
export function hashTokenBase64(token: string, pepper: string | undefined): string {
  return pepper === undefined ? hash("sha256", token, "base64") : createHmac("sha256", pepper).update(token).digest("base64");
}

/** The display start of a token: prefix and first 4 secret characters. */
export function tokenStart(token: string): string {
  return token.slice(0, token.indexOf("_") + 5);
}
