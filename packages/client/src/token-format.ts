import { randomInt } from "node:crypto";
import { crc32 } from "node:zlib";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** 32 base62 characters carry 190.5 bits of entropy. */
export const SECRET_LENGTH = 32;
const CHECKSUM_LENGTH = 6;

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

/** CRC-32 (IEEE, as zlib's) one byte at a time. */
const CRC_TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/** Each ASCII code's base62 digit, or -1. */
const DIGIT = (() => {
  const digits = new Int8Array(128).fill(-1);
  for (let i = 0; i < BASE62.length; i++) digits[BASE62.charCodeAt(i)] = i;
  return digits;
})();

/** The CRC-32 state after a prefix's UTF-8 bytes (before the final inversion), per prefix. */
const prefixStates = new Map<string, number>();

function prefixState(prefix: string): number {
  let state = prefixStates.get(prefix);
  if (state === undefined) {
    state = -1;
    for (const byte of Buffer.from(prefix, "utf8")) state = CRC_TABLE[(state ^ byte) & 0xff]! ^ (state >>> 8);
    if (prefixStates.size < 16) prefixStates.set(prefix, state);
  }
  return state;
}

/**
 * Returns the token's parts when it is well formed with a valid checksum, else undefined.
 * One pass over the characters, no intermediate strings or buffers: this runs before every
 * lookup that misses a cache. (The checksum is no secret — anyone holding a token can
 * compute it — so comparing it needs no constant-time routine.)
 */
export function parseToken(token: string, prefix: string): { prefix: string; secret: string } | undefined {
  if (token.length !== prefix.length + 1 + SECRET_LENGTH + CHECKSUM_LENGTH) return undefined;
  if (!token.startsWith(prefix) || token.charCodeAt(prefix.length) !== 0x5f /* _ */) return undefined;
  const start = prefix.length + 1;
  const end = start + SECRET_LENGTH;
  // The secret: base62 characters (one byte each in UTF-8), CRC-32 continued from the prefix's.
  let crc = prefixState(prefix);
  for (let i = start; i < end; i++) {
    const c = token.charCodeAt(i);
    if (c >= 128 || DIGIT[c]! < 0) return undefined;
    crc = CRC_TABLE[(crc ^ c) & 0xff]! ^ (crc >>> 8);
  }
  // The checksum: CHECKSUM_LENGTH base62 digits, most significant first (62^6 > 2^32: one spelling per value).
  let checksum = 0;
  for (let i = end; i < token.length; i++) {
    const c = token.charCodeAt(i);
    const digit = c < 128 ? DIGIT[c]! : -1;
    if (digit < 0) return undefined;
    checksum = checksum * 62 + digit;
  }
  if (checksum !== (crc ^ -1) >>> 0) return undefined;
  return { prefix, secret: token.slice(start, end) };
}
