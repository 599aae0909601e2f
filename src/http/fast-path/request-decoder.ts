import { type DescMessage, type Message, create } from "@bufbuild/protobuf";
import { TestApiKeyRequestSchema, type VerifyTokenRequest, VerifyTokenRequestSchema } from "../../gen/apikeys/v1/api_keys_pb.js";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads the binary requests of the fast-path methods in their common shape
 * without reflection: VerifyTokenRequest with fields 1–5 in their declared wire
 * types (string lengths and `cost` under 2^28), and an empty TestApiKeyRequest.
 * Anything else — another field number or wire type, a longer varint, text that
 * is not UTF-8, a truncated field — is undefined, for connect's own parser to
 * read or refuse. What it returns equals what fromBinary returns for the same
 * bytes (test/request-decoder.test.ts).
 */
export function decodeRequest(schema: DescMessage, bytes: Uint8Array): Message | undefined {
  if (schema === TestApiKeyRequestSchema) return bytes.length === 0 ? create(TestApiKeyRequestSchema) : undefined;
  if (schema === VerifyTokenRequestSchema) return decodeVerifyTokenRequest(bytes);
  return undefined;
}

function decodeVerifyTokenRequest(bytes: Uint8Array): VerifyTokenRequest | undefined {
  let token = "";
  let clientIp = "";
  const allOf: string[] = [];
  const anyOf: string[] = [];
  let cost: bigint | undefined;
  let at = 0;
  while (at < bytes.length) {
    const tag = bytes[at++]!;
    if (tag === 0x28) {
      // cost (5, varint)
      const read = varint(bytes, at);
      if (read === undefined) return undefined;
      cost = BigInt(read.value);
      at = read.next;
      continue;
    }
    // token (1), all_of (2), any_of (3), client_ip (4): length-delimited
    if (tag !== 0x0a && tag !== 0x12 && tag !== 0x1a && tag !== 0x22) return undefined;
    const length = varint(bytes, at);
    if (length === undefined || length.next + length.value > bytes.length) return undefined;
    let text: string;
    try {
      text = utf8.decode(bytes.subarray(length.next, length.next + length.value));
    } catch {
      return undefined;
    }
    at = length.next + length.value;
    if (tag === 0x0a) token = text;
    else if (tag === 0x12) allOf.push(text);
    else if (tag === 0x1a) anyOf.push(text);
    else clientIp = text;
  }
  return verifyTokenRequest(token, allOf, anyOf, clientIp, cost);
}

/**
 * The message `create(VerifyTokenRequestSchema, …)` makes (a proto3 message is a
 * plain object: its type name, then its implicit-presence fields in declaration
 * order, then `cost` — `optional`, so present only when set), without create's walk
 * over the descriptor. test/request-decoder.test.ts holds the two strictly equal,
 * key order included, so a field added to the schema fails there.
 */
function verifyTokenRequest(token: string, allOf: string[], anyOf: string[], clientIp: string, cost: bigint | undefined): VerifyTokenRequest {
  const message: VerifyTokenRequest = { $typeName: "apikeys.v1.VerifyTokenRequest", token, allOf, anyOf, clientIp };
  if (cost !== undefined) message.cost = cost;
  return message;
}

/** JSON member names of VerifyTokenRequest (JSON and proto names) and the field each sets. */
const JSON_FIELDS: Record<string, "token" | "allOf" | "anyOf" | "clientIp" | "cost"> = {
  token: "token",
  allOf: "allOf",
  all_of: "allOf",
  anyOf: "anyOf",
  any_of: "anyOf",
  clientIp: "clientIp",
  client_ip: "clientIp",
  cost: "cost",
};

/**
 * Reads the JSON requests of the fast-path methods in their common shape without
 * reflection: an object of known members (each field named once, in one of its
 * two spellings), strings, arrays of strings, and `cost` as an integer under 2^28;
 * for TestApiKey `{}`. Anything else — null, another type, an unknown or repeated
 * member, text that is not UTF-8 — is undefined, for connect's own parser to read
 * or refuse. What it returns equals what fromJsonString returns (with the
 * server's strict options) for the same text.
 */
export function decodeJsonRequest(schema: DescMessage, bytes: Uint8Array): Message | undefined {
  let text: string;
  let json: unknown;
  try {
    text = utf8.decode(bytes);
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) return undefined;
  const members = Object.keys(json);
  // JSON.parse keeps the last of repeated members, which the strict parser refuses.
  if (topLevelMemberCount(text) !== members.length) return undefined;
  if (schema === TestApiKeyRequestSchema) return members.length === 0 ? create(TestApiKeyRequestSchema) : undefined;
  if (schema !== VerifyTokenRequestSchema) return undefined;
  const init: { token?: string; allOf?: string[]; anyOf?: string[]; clientIp?: string; cost?: bigint } = {};
  for (const member of members) {
    const field = JSON_FIELDS[member];
    if (field === undefined || init[field] !== undefined) return undefined;
    const value = (json as Record<string, unknown>)[member];
    if (field === "token" || field === "clientIp") {
      if (!isText(value)) return undefined;
      init[field] = value;
    } else if (field === "cost") {
      if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value >= 2 ** 28) return undefined;
      init.cost = BigInt(value);
    } else {
      if (!Array.isArray(value) || !value.every(isText)) return undefined;
      init[field] = value as string[];
    }
  }
  return verifyTokenRequest(init.token ?? "", init.allOf ?? [], init.anyOf ?? [], init.clientIp ?? "", init.cost);
}

/** A string that is valid Unicode text (JSON escapes can spell lone surrogates, which proto strings refuse). */
function isText(value: unknown): value is string {
  return typeof value === "string" && (value as string & { isWellFormed(): boolean }).isWellFormed();
}

/** The number of members of the top-level object in `text` (which JSON.parse accepted), repeats included. */
function topLevelMemberCount(text: string): number {
  let depth = 0;
  let count = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // A string: skip to its closing quote.
      if (depth === 1 && expectKey) count++;
      expectKey = false;
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x7b || c === 0x5b) {
      depth++;
      expectKey = c === 0x7b && depth === 1;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    } else if (c === 0x2c && depth === 1) {
      expectKey = true;
    }
  }
  return count;
}

/** A varint of at most 4 bytes (under 2^28), or undefined. */
function varint(bytes: Uint8Array, at: number): { value: number; next: number } | undefined {
  let value = 0;
  for (let i = 0; i < 4; i++) {
    if (at + i >= bytes.length) return undefined;
    const b = bytes[at + i]!;
    value |= (b & 0x7f) << (7 * i);
    if ((b & 0x80) === 0) return { value, next: at + i + 1 };
  }
  return undefined;
}
