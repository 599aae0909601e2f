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
});
