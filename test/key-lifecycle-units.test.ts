import { Code } from "@connectrpc/connect";
import { ApiError } from "../src/errors.js";
import { describe, expect, it } from "vitest";
import { requireEnvironment, requireExpiry, requireMetadata } from "../src/keys/key-options.js";
import { requireDescription } from "../src/validation.js";
import { OriginFilter, parseCidr, parseClientAddress } from "../src/keys/cidr.js";
import { RateLimiter } from "../src/verify/rate-limiter.js";

describe("CIDR parsing and matching", () => {
  it("parses IPv4, IPv6 and bare addresses, refusing malformed ones", () => {
    expect(parseCidr("10.0.0.0/8")?.text).toBe("10.0.0.0/8");
    expect(parseCidr("2001:db8::/32")?.cidr.prefix).toBe(32);
    expect(parseCidr("192.168.1.7")?.text).toBe("192.168.1.7/32");
    expect(parseCidr("::1")?.text).toBe("::1/128");
    for (const bad of ["10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/-1", "abc", "", "1.2.3.4/8/9", "2001:db8:::1/64"]) {
      expect([bad, parseCidr(bad)]).toEqual([bad, undefined]);
    }
  });

  it("reads IPv4-mapped IPv6 client addresses as IPv4, and embedded IPv4 tails", () => {
    expect([...parseClientAddress("::ffff:10.1.2.3")!]).toEqual([10, 1, 2, 3]);
    expect(parseClientAddress("::ffff:a01:203")!.length).toBe(4);
    expect(parseClientAddress("64:ff9b::10.1.2.3")!.length).toBe(16);
    expect(parseClientAddress("not an ip")).toBeUndefined();
  });

  it("matches prefixes that do not fall on byte boundaries", () => {
    const filter = new OriginFilter(["172.16.0.0/12", "2001:db8:8000::/33"]);
    expect(filter.allows("172.31.255.255")).toBe(true);
    expect(filter.allows("172.32.0.0")).toBe(false);
    expect(filter.allows("2001:db8:8000::1")).toBe(true);
    expect(filter.allows("2001:db8:7fff::1")).toBe(false);
    expect(filter.anyOrigin).toBe(false);
  });

  it("keeps IPv4 and IPv6 apart: ::/0 admits no IPv4 client", () => {
    const v6 = new OriginFilter(["::/0"]);
    expect(v6.allows("2001:db8::1")).toBe(true);
    expect(v6.allows("10.0.0.1")).toBe(false);
    expect(v6.allows("::ffff:10.0.0.1")).toBe(false);
    expect(new OriginFilter(["0.0.0.0/0", "::/0"]).anyOrigin).toBe(true);
    expect(new OriginFilter([]).allows("10.0.0.1")).toBe(false);
  });
});

describe("RateLimiter", () => {
  const limit = { requests: 2, periodMs: 1000 };

  it("allows a burst of `requests`, then refills evenly over the period", () => {
    let now = 0;
    const limiter = new RateLimiter(10, () => now);
    expect([limiter.take("k", limit), limiter.take("k", limit), limiter.take("k", limit)]).toEqual([true, true, false]);
    now = 499;
    expect(limiter.take("k", limit)).toBe(false);
    now = 1000;
    expect(limiter.take("k", limit)).toBe(true);
    expect(limiter.take("other", limit)).toBe(true);
  });

  it("starts over when the key's limit changes", () => {
    const limiter = new RateLimiter(10, () => 0);
    limiter.take("k", limit);
    limiter.take("k", limit);
    expect(limiter.take("k", limit)).toBe(false);
    expect(limiter.take("k", { requests: 5, periodMs: 1000 })).toBe(true);
  });

  it("forgets full buckets, and refuses new keys when every tracked bucket is still draining", () => {
    let now = 0;
    const limiter = new RateLimiter(2, () => now);
    expect(limiter.take("a", limit)).toBe(true);
    expect(limiter.take("b", limit)).toBe(true);
    // Fails closed: no room to track "c" without forgetting a draining bucket.
    expect(limiter.take("c", limit)).toBe(false);
    now = 1000;
    expect(limiter.take("c", limit)).toBe(true);
    expect(limiter.size).toBe(1);
    limiter.sweep();
    expect(limiter.size).toBe(1);
  });
});

describe("key option checks", () => {
  const codeOfCall = (fn: () => unknown) => {
    try {
      fn();
      return "ok";
    } catch (err) {
      return err instanceof ApiError ? err.code : "not an ApiError";
    }
  };

  it("refuse NUL characters, which Postgres cannot store in text or jsonb", () => {
    expect(codeOfCall(() => requireDescription("a\u0000"))).toBe(Code.InvalidArgument);
    expect(codeOfCall(() => requireMetadata({ "k\u0000": "v" }))).toBe(Code.InvalidArgument);
    expect(codeOfCall(() => requireMetadata({ k: "\u0000" }))).toBe(Code.InvalidArgument);
    expect(codeOfCall(() => requireEnvironment({ k: "\u0000" }))).toBe(Code.InvalidArgument);
    expect(codeOfCall(() => requireEnvironment({ k: "fine", n: 1, b: false }))).toBe("ok");
  });

  it("refuse expiries in the past or past the year 9999", () => {
    const at = (seconds: bigint) => ({ $typeName: "google.protobuf.Timestamp" as const, seconds, nanos: 0 });
    expect(codeOfCall(() => requireExpiry(at(400_000_000_000n)))).toBe(Code.InvalidArgument);
    expect(codeOfCall(() => requireExpiry(at(1n), 2000))).toBe(Code.InvalidArgument);
    expect(requireExpiry(at(3n), 2000)?.getTime()).toBe(3000);
    expect(requireExpiry(undefined)).toBeNull();
  });
});
