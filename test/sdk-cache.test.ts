import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { ApiKeySchema } from "../src/gen/apikeys/v1/resources_pb.js";
import { type TokenVerdict, VerificationCache } from "@apikeys/client";

function valid(keyId: string, policyId: string): TokenVerdict {
  const apiKey = create(ApiKeySchema, { id: keyId, name: keyId, policy: { id: policyId, name: policyId } });
  return {
    valid: true,
    key: { id: keyId, name: keyId, policy: { id: policyId, name: policyId }, permissions: ["svc:read"], environment: {}, apiKey },
    permissionSet: new Set(["svc:read"]),
  };
}

function clock() {
  let now = 1_000;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe("VerificationCache", () => {
  it("serves entries until their TTL ends", () => {
    const time = clock();
    const cache = new VerificationCache(10, time.now);
    cache.set("t1", valid("k1", "p1"), 100, cache.currentGeneration());
    expect(cache.get("t1")?.valid).toBe(true);
    time.advance(99);
    expect(cache.get("t1")).toBeDefined();
    time.advance(1);
    expect(cache.get("t1")).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("is bounded and evicts the least recently used", () => {
    const cache = new VerificationCache(2);
    const g = cache.currentGeneration();
    cache.set("t1", valid("k1", "p"), 1_000, g);
    cache.set("t2", valid("k2", "p"), 1_000, g);
    cache.get("t1");
    cache.set("t3", valid("k3", "p"), 1_000, g);
    expect(cache.size).toBe(2);
    expect(cache.get("t2")).toBeUndefined();
    expect(cache.get("t1")).toBeDefined();
    expect(cache.get("t3")).toBeDefined();
  });

  it("holds whatever an exact LRU of three quarters its capacity would", () => {
    // A hit in the youngest quarter is not moved (a hot key is not re-inserted per call); the bound that keeps.
    const capacity = 100;
    const cache = new VerificationCache(capacity);
    const reference = new Map<string, true>();
    const referenceCapacity = capacity - capacity / 4;
    const use = (key: string) => {
      reference.delete(key);
      reference.set(key, true);
      if (reference.size > referenceCapacity) reference.delete(reference.keys().next().value as string);
    };
    let seed = 7;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    for (let step = 0; step < 20_000; step++) {
      // Mostly a hot set of 40 keys, sometimes one of 400 others: both hits and evictions happen.
      const key = `t${random() < 0.8 ? Math.floor(random() * 40) : 40 + Math.floor(random() * 400)}`;
      if (cache.get(key) === undefined) cache.set(key, valid(key, "p"), 60_000, cache.currentGeneration());
      use(key);
      expect(cache.size).toBeLessThanOrEqual(capacity);
      if (step % 97 === 0) {
        // Each look is a use of both, in the same order.
        const missing = [...reference.keys()].filter((k) => {
          use(k);
          return cache.get(k) === undefined;
        });
        expect(missing).toEqual([]);
      }
    }
    expect(cache.hits).toBeGreaterThan(10_000);
  });

  it("evicts exactly the entries of a key or of a policy", () => {
    const cache = new VerificationCache(10);
    const g = cache.currentGeneration();
    cache.set("a1", valid("ka", "p1"), 1_000, g);
    cache.set("a2", valid("ka", "p1"), 1_000, cache.currentGeneration());
    cache.set("b", valid("kb", "p1"), 1_000, cache.currentGeneration());
    cache.set("c", valid("kc", "p2"), 1_000, cache.currentGeneration());
    cache.set("refused", { valid: false, code: VerifyCode.DISABLED, keyId: "kd", policyId: "p2" }, 1_000, cache.currentGeneration());
    cache.invalidateKey("ka");
    expect([cache.get("a1"), cache.get("a2")]).toEqual([undefined, undefined]);
    expect(cache.get("b")).toBeDefined();
    cache.invalidatePolicy("p2");
    expect(cache.get("c")).toBeUndefined();
    expect(cache.get("refused")).toBeUndefined();
    expect(cache.get("b")).toBeDefined();
  });

  it("does not cache a lookup that raced an eviction", () => {
    const cache = new VerificationCache(10);
    const before = cache.currentGeneration();
    cache.invalidatePolicy("p1"); // arrives while the lookup is in flight
    cache.set("t", valid("k", "p1"), 1_000, before);
    expect(cache.get("t")).toBeUndefined();
  });

  it("caches refusals without a key, and nothing with a zero TTL", () => {
    const cache = new VerificationCache(10);
    cache.set("unknown", { valid: false, code: VerifyCode.NOT_FOUND }, 1_000, cache.currentGeneration());
    cache.set("limited", valid("k", "p"), 0, cache.currentGeneration());
    expect(cache.get("unknown")).toEqual({ valid: false, code: VerifyCode.NOT_FOUND });
    expect(cache.get("limited")).toBeUndefined();
  });

  it("shortens every entry when evictions stop arriving, and drops all on resync", () => {
    const time = clock();
    const cache = new VerificationCache(10, time.now);
    cache.set("long", valid("k1", "p"), 60_000, cache.currentGeneration());
    cache.set("short", valid("k2", "p"), 50, cache.currentGeneration());
    cache.capExpiry(1_000);
    time.advance(999);
    expect(cache.get("long")).toBeDefined();
    expect(cache.get("short")).toBeUndefined();
    time.advance(1);
    expect(cache.get("long")).toBeUndefined();
    cache.set("again", valid("k1", "p"), 60_000, cache.currentGeneration());
    cache.clear();
    expect(cache.size).toBe(0);
  });
});
