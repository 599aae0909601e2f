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
  return create(VerifyTokenRequestSchema, cost === undefined ? { token, allOf, anyOf, clientIp } : { token, allOf, anyOf, clientIp, cost });
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
