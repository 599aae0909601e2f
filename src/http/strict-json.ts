import { type JsonValue, fromJsonString } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";

/**
 * How every JSON codec on this server reads requests: the RPC protocols
 * (Connect unary, GET and streaming, gRPC-Web and gRPC `+json`; connect's server
 * default ignores unknown fields and enum names, which turns a typo into another
 * request) and REST. Unknown fields and enum names are invalid_argument, and so
 * is text that is not UTF-8 (the default decoder would store U+FFFD). Duplicate
 * keys are refused by fromJsonString, which connect uses, and by readJsonBody.
 */
export const STRICT_JSON_OPTIONS = {
  ignoreUnknownFields: false,
  textDecoder: new TextDecoder("utf-8", { fatal: true }),
};

/**
 * Parses a JSON request body as the RPC codecs do: UTF-8 only, no duplicate keys.
 * Throws an Error whose message says what is wrong.
 */
export function readJsonBody(bytes: Uint8Array): JsonValue {
  const text = STRICT_JSON_OPTIONS.textDecoder.decode(bytes);
  const json = JSON.parse(text) as JsonValue;
  try {
    // google.protobuf.Value holds any JSON; fromJsonString refuses duplicate keys at any depth.
    fromJsonString(ValueSchema, text);
  } catch (err) {
    throw new Error((err as Error).message.replace(/^cannot decode message google\.protobuf\.Value from JSON: /, ""));
  }
  return json;
}
