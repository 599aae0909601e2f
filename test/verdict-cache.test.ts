import { describe, expect, it } from "vitest";
import type { KeyRecord } from "../src/keys/key-record.js";
import { VerdictCache } from "../src/verify/verdict-cache.js";

const now = new Date("2026-11-23T12:00:00Z");

function record(id: string, policyId = "p1"): KeyRecord {
  return {
    id,
    name: id,
    enabled: true,
    start: "ak_abcd",
    createdOn: now,
    updatedOn: now,
    lastUsedOn: null,
    createdBy: null,
    description: "",
    metadata: {},
    expiresOn: null,
    allowedCidrs: ["0.0.0.0/0", "::/0"],
    environment: {},
    rateLimit: null,
    remaining: null,
    refill: null,
    credentialType: "token",
    consumer: null,
    policy: { id: policyId, name: policyId, description: "", createdOn: now, updatedOn: now, createdBy: null, permissions: ["svc:read"] },
  };
}

describe("VerdictCache", () => {
  it("shares one policy copy and permission set per policy version, never a stale one", () => {
    const cache = new VerdictCache(10);
    const a = cache.set("a", record("k1", "p1"), 60_000, cache.currentGeneration());
    const b = cache.set("b", record("k2", "p1"), 60_000, cache.currentGeneration());
    expect(b.permissionSet).toBe(a.permissionSet);
    expect(b.record.policy).toBe(a.record.policy);
    expect(b.origins).toBe(a.origins);

    // A newer version of the policy (as read after an update) gets its own set.
    const changed = record("k3", "p1");
    changed.policy = { ...changed.policy, updatedOn: new Date(changed.policy.updatedOn.getTime() + 1), permissions: ["svc:read", "svc:write"] };
    const c = cache.set("c", changed, 60_000, cache.currentGeneration());
    expect(c.permissionSet).not.toBe(a.permissionSet);
    expect(c.permissionSet.has("svc:write")).toBe(true);
    expect(a.permissionSet.has("svc:write")).toBe(false);

    // After an invalidation nothing of the old version is reused.
    cache.invalidatePolicy("p1");
    const d = cache.set("d", record("k4", "p1"), 60_000, cache.currentGeneration());
    expect(d.permissionSet).not.toBe(a.permissionSet);
  });

  it("bounds the entries' estimated bytes, evicting least recently used first", () => {
    const big = (id: string) => ({ ...record(id), description: "d".repeat(10_000), metadata: { note: "m".repeat(10_000) } });
    const cache = new VerdictCache(1_000, Date.now, 100_000);
    for (let i = 0; i < 20; i++) {
      cache.set(`h${i}`, big(`k${i}`), 60_000, cache.currentGeneration());
    }
    // Each entry holds ~40 kB of strings: 2 fit in 100 kB, far fewer than the entry cap.
    expect(cache.bytes).toBeLessThanOrEqual(100_000);
    expect(cache.bytes).toBeGreaterThan(60_000);
    expect(cache.size).toBe(2);
    expect(cache.get("h19")?.record.id).toBe("k19");
    expect(cache.evictions).toBe(18);
    // Small entries are bounded by the same budget, not by size alone.
    for (let i = 0; i < 500; i++) cache.set(`s${i}`, record(`s${i}`), 60_000, cache.currentGeneration());
    expect(cache.bytes).toBeLessThanOrEqual(100_000);
    expect(cache.size).toBeLessThan(500);
    // Invalidation and clearing give the bytes back.
    cache.invalidateKey("s499");
    cache.clear();
    expect(cache.bytes).toBe(0);
  });

  it("evicts the least recently used entry past its cap", () => {
    const cache = new VerdictCache(2);
    cache.set("a", record("a"), 60_000, cache.currentGeneration());
    cache.set("b", record("b"), 60_000, cache.currentGeneration());
    cache.get("a");
    cache.set("c", record("c"), 60_000, cache.currentGeneration());
    expect(cache.size).toBe(2);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")?.record.id).toBe("a");
    expect(cache.evictions).toBe(1);
  });

  it("evicts by key id and by policy id", () => {
    const cache = new VerdictCache(10);
    cache.set("a", record("k1", "p1"), 60_000, cache.currentGeneration());
    cache.set("b", record("k2", "p1"), 60_000, cache.currentGeneration());
    cache.set("c", record("k3", "p2"), 60_000, cache.currentGeneration());
    cache.invalidateKey("k3");
    expect(cache.get("c")).toBeUndefined();
    expect(cache.size).toBe(2);
    cache.invalidatePolicy("p1");
    expect(cache.size).toBe(0);
  });

  it("does not cache a read that raced an invalidation", () => {
    const cache = new VerdictCache(10);
    const generation = cache.currentGeneration();
    cache.invalidatePolicy("p1");
    const entry = cache.set("a", record("k1"), 60_000, generation);
    expect(entry.permissionSet.has("svc:read")).toBe(true);
    expect(cache.get("a")).toBeUndefined();
  });

  it("expires entries after their ttl", () => {
    let now = 1000;
    const cache = new VerdictCache(10, () => now);
    cache.set("a", record("k1"), 500, cache.currentGeneration());
    expect(cache.get("a")).toBeDefined();
    now = 1500;
    expect(cache.get("a")).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("caches nothing with a zero cap", () => {
    const cache = new VerdictCache(0);
    cache.set("a", record("k1"), 60_000, cache.currentGeneration());
    expect(cache.size).toBe(0);
  });
});
