import { describe, expect, it } from "vitest";
import { FailureThrottle } from "../src/auth/failure-throttle.js";

/** A throttle on a clock the test moves. */
function throttle(limit: number, windowMs: number, maxAddresses?: number) {
  const clock = { now: 1_000_000 };
  return { clock, t: new FailureThrottle({ limit, windowMs, maxAddresses }, () => clock.now) };
}

describe("FailureThrottle", () => {
  it("blocks an address from its limit-th failure until its window, counted from the first failure, ends", () => {
    const { clock, t } = throttle(3, 60_000);
    t.recordFailure("198.51.100.1");
    clock.now += 10_000;
    t.recordFailure("198.51.100.1");
    expect(t.retryAfterMs("198.51.100.1")).toBe(0);
    t.recordFailure("198.51.100.1");
    expect(t.retryAfterMs("198.51.100.1")).toBe(50_000);
    expect(t.retryAfterMs("198.51.100.2")).toBe(0);
    expect(t.blockedCount()).toBe(1);
    expect(t.throttled).toBe(1);
    clock.now += 50_000;
    expect(t.retryAfterMs("198.51.100.1")).toBe(0);
    expect(t.blockedCount()).toBe(0);
  });

  it("never throttles an unknown address or when the limit is 0", () => {
    const { t } = throttle(1, 60_000);
    t.recordFailure("");
    expect(t.retryAfterMs("")).toBe(0);
    const off = throttle(0, 60_000).t;
    for (let i = 0; i < 10; i++) off.recordFailure("198.51.100.1");
    expect(off.retryAfterMs("198.51.100.1")).toBe(0);
  });

  it("holds at most maxAddresses, forgetting ended windows first, then the oldest", () => {
    const { clock, t } = throttle(1, 60_000, 2);
    t.recordFailure("a");
    clock.now += 30_000;
    t.recordFailure("b");
    clock.now += 31_000;
    // "a" has ended: making room for "c" drops it, and "b" stays blocked.
    t.recordFailure("c");
    expect([t.retryAfterMs("b") > 0, t.retryAfterMs("c") > 0]).toEqual([true, true]);
    // Both windows still running: "d" evicts the oldest, "b".
    t.recordFailure("d");
    expect([t.retryAfterMs("b"), t.retryAfterMs("c") > 0, t.retryAfterMs("d") > 0]).toEqual([0, true, true]);
  });
});
