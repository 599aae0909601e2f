import { randomInt, timingSafeEqual } from "node:crypto";
import { crc32 } from "node:zlib";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** 32 base62 characters carry 190.5 bits of entropy. */
export const SECRET_LENGTH = 32;
const CHECKSUM_LENGTH = 6;
const SECRET_PATTERN = /^[0-9A-Za-z]+$/;

function toBase62(value: number, width: number): string {
  let out = "";
  for (let i = 0; i < width; i++) {
    out = BASE62[value % 62] + out;
    value = Math.floor(value / 62);
  }
  return out;
}

function checksum(prefix: string, secret: string): string {
  return toBase62(crc32(prefix + secret), CHECKSUM_LENGTH);
}

/** Creates a fresh token: `<prefix>_<32 base62 secret><6 base62 CRC32 checksum>`. */
export function generateToken(prefix: string): string {
  let secret = "";
  // randomInt draws from crypto.randomBytes without modulo bias.
  for (let i = 0; i < SECRET_LENGTH; i++) secret += BASE62[randomInt(62)];
  return `${prefix}_${secret}${checksum(prefix, secret)}`;
}

/** Returns the token's parts when it is well formed with a valid checksum, else undefined. */
export function parseToken(token: string, prefix: string): { prefix: string; secret: string } | undefined {
  if (token.length !== prefix.length + 1 + SECRET_LENGTH + CHECKSUM_LENGTH) return undefined;
  if (!token.startsWith(prefix) || token[prefix.length] !== "_") return undefined;
  const body = token.slice(prefix.length + 1);
  if (!SECRET_PATTERN.test(body)) return undefined;
  const secret = body.slice(0, SECRET_LENGTH);
  const expected = checksum(prefix, secret);
  if (!timingSafeEqual(Buffer.from(expected), Buffer.from(body.slice(SECRET_LENGTH)))) return undefined;
  return { prefix, secret };
}
