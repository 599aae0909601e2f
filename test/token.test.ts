import { timingSafeEqual } from "node:crypto";
import { crc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import { generateToken, hashToken, parseToken, tokenStart } from "../src/tokens/token.js";

describe("token format", () => {
  it("is prefix, underscore, 32 base62 secret characters and a 6-character checksum", () => {
    const token = generateToken("ak");
    expect(token).toMatch(/^ak_[0-9A-Za-z]{38}$/);
    expect(parseToken(token, "ak")).toEqual({ prefix: "ak", secret: token.slice(3, 35) });
  });

  it("never repeats", () => {
    const tokens = new Set(Array.from({ length: 2000 }, () => generateToken("ak")));
    expect(tokens.size).toBe(2000);
  });

  it("refuses any single-character typo through the checksum", () => {
    const token = generateToken("ak");
    for (let i = 3; i < token.length; i++) {
      const replacement = token[i] === "a" ? "b" : "a";
      const typo = token.slice(0, i) + replacement + token.slice(i + 1);
      expect(parseToken(typo, "ak"), `typo at ${i}`).toBeUndefined();
    }
  });

  it("refuses random strings, other prefixes and wrong lengths", () => {
    const token = generateToken("ak");
    expect(parseToken("", "ak")).toBeUndefined();
    expect(parseToken("ak_" + "a".repeat(38), "ak")).toBeUndefined();
    expect(parseToken(token, "sk")).toBeUndefined();
    expect(parseToken(token + "x", "ak")).toBeUndefined();
    expect(parseToken(token.replace("ak_", "ak-"), "ak")).toBeUndefined();
    expect(parseToken(token.slice(0, 10) + "!" + token.slice(11), "ak")).toBeUndefined();
  });

  it("works with a custom prefix", () => {
    const token = generateToken("acme");
    expect(parseToken(token, "acme")).toBeDefined();
    expect(tokenStart(token)).toBe(token.slice(0, 9));
  });

  it("hashes with SHA-256, or HMAC when a pepper is set", () => {
    const token = generateToken("ak");
    expect(hashToken(token, undefined)).toHaveLength(32);
    expect(hashToken(token, undefined).equals(hashToken(token, undefined))).toBe(true);
    const peppered = hashToken(token, "p".repeat(32));
    expect(peppered.equals(hashToken(token, undefined))).toBe(false);
  });

  it("parses exactly as the format's definition (zlib CRC-32 of prefix + secret, base62) for random and corrupted tokens", () => {
    // The definition, spelled the straightforward way: the one-pass parser must agree with it on every input.
    const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const base62 = (value: number) => Array.from({ length: 6 }, (_, i) => BASE62[Math.floor(value / 62 ** (5 - i)) % 62]).join("");
    const reference = (token: string, prefix: string) => {
      if (token.length !== prefix.length + 39 || !token.startsWith(`${prefix}_`)) return undefined;
      const body = token.slice(prefix.length + 1);
      if (!/^[0-9A-Za-z]+$/.test(body)) return undefined;
      const secret = body.slice(0, 32);
      const expected = Buffer.from(base62(crc32(prefix + secret)));
      return timingSafeEqual(expected, Buffer.from(body.slice(32))) ? { prefix, secret } : undefined;
    };
    const prefixes = ["ak", "sk", "acme", "prefix-with-dash", "ünï", "k"];
    const alphabet = BASE62 + "_-!~ é\u00ff\u0100\u{1F511}";
    let accepted = 0;
    for (let n = 0; n < 5000; n++) {
      const prefix = prefixes[n % prefixes.length]!;
      let token = generateToken(prefix);
      // Most get one to three characters replaced (any position, also outside base62); some stay intact.
      for (let edits = n % 4; edits > 0; edits--) {
        const at = Math.floor(Math.random() * token.length);
        const chars = [...alphabet];
        token = token.slice(0, at) + chars[Math.floor(Math.random() * chars.length)] + token.slice(at + 1);
      }
      const expected = reference(token, prefix);
      expect(parseToken(token, prefix), token).toEqual(expected);
      if (expected !== undefined) accepted++;
    }
    expect(accepted).toBeGreaterThan(1000);
  });
});
