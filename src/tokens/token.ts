import { createHmac, hash } from "node:crypto";

// The token format (and its checksum) is shared with the SDK, which refuses malformed tokens offline.
export { SECRET_LENGTH, generateToken, parseToken } from "@apikeys/client";

/** The stored form of a token: SHA-256, or HMAC-SHA256 with the server pepper. */
export function hashToken(token: string, pepper: string | undefined): Buffer {
  return pepper === undefined
    ? // One-shot crypto.hash: a third of createHash's cost on the verify path.
      hash("sha256", token, "buffer")
    : createHmac("sha256", pepper).update(token).digest();
}

/** The display start of a token: prefix and first 4 secret characters. */
export function tokenStart(token: string): string {
  return token.slice(0, token.indexOf("_") + 5);
}
