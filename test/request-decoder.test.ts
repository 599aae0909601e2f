import { create, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { TestApiKeyRequestSchema, VerifyTokenRequestSchema } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { decodeJsonRequest, decodeRequest } from "../src/http/fast-path/request-decoder.js";
import { STRICT_JSON_OPTIONS } from "../src/http/strict-json.js";

/*
 * The fast path's hand-written request reader must agree with protobuf-es's
 * fromBinary wherever it answers, and answer for what clients send.
 */

function random(seed: number) {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
}

describe("fast-path request decoder", () => {
  it("reads what clients send, as fromBinary does", () => {
    const rnd = random(7);
    const word = () => "x".repeat(Math.floor(rnd() * 40)) + String.fromCodePoint(32 + Math.floor(rnd() * 0x2fff));
    for (let i = 0; i < 2_000; i++) {
      const message = create(VerifyTokenRequestSchema, {
        token: rnd() < 0.9 ? word() : "",
        allOf: Array.from({ length: Math.floor(rnd() * 4) }, word),
        anyOf: Array.from({ length: Math.floor(rnd() * 3) }, word),
        clientIp: rnd() < 0.5 ? "10.0.0.1" : "",
        ...(rnd() < 0.5 && { cost: BigInt(Math.floor(rnd() * 2 ** 27)) }),
      });
      const bytes = toBinary(VerifyTokenRequestSchema, message);
      const decoded = decodeRequest(VerifyTokenRequestSchema, bytes);
      expect(decoded, `case ${i}`).toBeDefined();
      const parsed = fromBinary(VerifyTokenRequestSchema, bytes);
      // Strictly equal, in key order too: the decoder builds the message without create().
      expect(decoded).toStrictEqual(parsed);
      expect(Object.keys(decoded!)).toEqual(Object.keys(parsed));
    }
    expect(decodeRequest(TestApiKeyRequestSchema, new Uint8Array(0))).toEqual(fromBinary(TestApiKeyRequestSchema, new Uint8Array(0)));
  });

  it("agrees with fromBinary on repeated singular fields and non-minimal varints", () => {
    const w = new BinaryWriter();
    w.tag(1, 2).string("first").tag(1, 2).string("second").tag(5, 0).uint32(3).tag(5, 0).uint32(9);
    const bytes = w.finish();
    expect(decodeRequest(VerifyTokenRequestSchema, bytes)).toEqual(fromBinary(VerifyTokenRequestSchema, bytes));
    const padded = new Uint8Array([0x0a, 0x82, 0x00, 0x61, 0x62]);
    expect(decodeRequest(VerifyTokenRequestSchema, padded)).toEqual(fromBinary(VerifyTokenRequestSchema, padded));
  });

  it("leaves everything else to connect's parser", () => {
    const cases: Array<[string, Uint8Array]> = [
      ["unknown field", new BinaryWriter().tag(9, 2).string("x").finish()],
      ["wrong wire type for token", new BinaryWriter().tag(1, 0).uint32(1).finish()],
      ["large cost", new BinaryWriter().tag(5, 0).int64(2n ** 40n).finish()],
      ["negative cost", new BinaryWriter().tag(5, 0).int64(-1n).finish()],
      ["truncated string", new Uint8Array([0x0a, 0x05, 0x61])],
      ["truncated varint", new Uint8Array([0x28, 0x80])],
      ["invalid UTF-8", new Uint8Array([0x0a, 0x02, 0xc3, 0x28])],
    ];
    for (const [name, bytes] of cases) expect(decodeRequest(VerifyTokenRequestSchema, bytes), name).toBeUndefined();
    expect(decodeRequest(TestApiKeyRequestSchema, new BinaryWriter().tag(1, 2).string("x").finish())).toBeUndefined();
  });
});

describe("fast-path JSON request decoder", () => {
  const utf8 = (text: string) => new TextEncoder().encode(text);
  const strict = (text: string) => fromJsonString(VerifyTokenRequestSchema, text, STRICT_JSON_OPTIONS);

  it("reads what clients send, as the strict JSON parser does", () => {
    const rnd = random(11);
    const word = () => "y".repeat(Math.floor(rnd() * 30)) + String.fromCodePoint(32 + Math.floor(rnd() * 0x2fff)) + (rnd() < 0.2 ? '"\\,{}[]' : "");
    for (let i = 0; i < 2_000; i++) {
      const message = create(VerifyTokenRequestSchema, {
        token: word(),
        allOf: Array.from({ length: Math.floor(rnd() * 4) }, word),
        anyOf: Array.from({ length: Math.floor(rnd() * 3) }, word),
        clientIp: rnd() < 0.5 ? "10.0.0.1" : "",
        ...(rnd() < 0.5 && { cost: BigInt(Math.floor(rnd() * 2 ** 27)) }),
      });
      let text = toJsonString(VerifyTokenRequestSchema, message, { useProtoFieldName: rnd() < 0.3 });
      // Clients also send cost as a number.
      text = text.replace(/"cost":"(\d+)"/, '"cost":$1');
      const decoded = decodeJsonRequest(VerifyTokenRequestSchema, utf8(text));
      expect(decoded, text).toBeDefined();
      const parsed = strict(text);
      expect(decoded).toStrictEqual(parsed);
      expect(Object.keys(decoded!)).toEqual(Object.keys(parsed));
    }
    expect(decodeJsonRequest(TestApiKeyRequestSchema, utf8(" { } "))).toEqual(fromJsonString(TestApiKeyRequestSchema, "{}"));
  });

  it("leaves everything else to connect's parser, which refuses or reads it", () => {
    const cases = [
      '{"token":"a","token":"b"}',
      '{"token":"a","tok\\u0065n":"b"}',
      '{"allOf":["x"],"all_of":["y"]}',
      '{"token":null}',
      '{"allOf":null}',
      '{"unknown":1}',
      '{"token":1}',
      '{"allOf":["x",1]}',
      '{"cost":"5"}',
      '{"cost":-1}',
      '{"cost":1.5}',
      '{"token":"\\ud800"}',
      '{"allOf":["\\udc00"]}',
      "[]",
      "null",
      '"token"',
      "{",
    ];
    for (const text of cases) expect(decodeJsonRequest(VerifyTokenRequestSchema, utf8(text)), text).toBeUndefined();
    expect(decodeJsonRequest(VerifyTokenRequestSchema, new Uint8Array([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]))).toBeUndefined();
    expect(decodeJsonRequest(TestApiKeyRequestSchema, utf8('{"x":1}'))).toBeUndefined();
    // Nested brackets inside strings do not confuse the member count.
    const tricky = '{"token":"a{\\"b\\":[1,2]}","allOf":["[,]","{,}"],"clientIp":""}';
    expect(decodeJsonRequest(VerifyTokenRequestSchema, utf8(tricky))).toEqual(strict(tricky));
  });
});
