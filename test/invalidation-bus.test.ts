import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { InvalidationBus } from "../src/streams/invalidation-bus.js";

async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("InvalidationBus", () => {
  it("delivers events in order to every subscriber", async () => {
    const bus = new InvalidationBus();
    bus.setListening(true);
    const a = bus.subscribe(new AbortController().signal);
    const b = bus.subscribe(new AbortController().signal);
    bus.publish({ kind: "key", id: "k1" });
    bus.publish({ kind: "policy", id: "p1" });
    for (const s of [a, b]) {
      expect(await s.next(1_000)).toEqual({ kind: "key", id: "k1" });
      expect(await s.next(1_000)).toEqual({ kind: "policy", id: "p1" });
    }
    // Idle: the handler sends a heartbeat.
    expect(await a.next(10)).toBeUndefined();
  });

  it("wakes a waiting subscriber as soon as an event arrives", async () => {
    const bus = new InvalidationBus();
    bus.setListening(true);
    const s = bus.subscribe(new AbortController().signal);
    const pending = s.next(60_000);
    bus.publish({ kind: "key", id: "k" });
    expect(await pending).toEqual({ kind: "key", id: "k" });
  });

  it("refuses subscribers and ends streams while its listener is down", async () => {
    const bus = new InvalidationBus();
    expect(() => bus.subscribe(new AbortController().signal)).toThrow(ConnectError);
    bus.setListening(true);
    const s = bus.subscribe(new AbortController().signal);
    const pending = s.next(60_000);
    bus.setListening(false);
    expect(await codeOf(pending)).toBe(Code.Unavailable);
    expect(bus.size).toBe(0);
    try {
      bus.subscribe(new AbortController().signal);
      expect.unreachable();
    } catch (err) {
      expect(ConnectError.from(err).code).toBe(Code.Unavailable);
    }
  });

  it("disconnects a subscriber that falls behind instead of buffering without bound", async () => {
    const bus = new InvalidationBus(3);
    bus.setListening(true);
    const slow = bus.subscribe(new AbortController().signal);
    const keeping = bus.subscribe(new AbortController().signal);
    for (let i = 0; i < 3; i++) bus.publish({ kind: "key", id: `k${i}` });
    expect(await keeping.next(1_000)).toEqual({ kind: "key", id: "k0" });
    bus.publish({ kind: "key", id: "k3" });
    expect(await codeOf(slow.next(1_000))).toBe(Code.ResourceExhausted);
    expect(await keeping.next(1_000)).toEqual({ kind: "key", id: "k1" });
    expect(bus.size).toBe(1);
  });

  it("ends a subscription when its stream is cancelled, and all at close", async () => {
    const bus = new InvalidationBus();
    bus.setListening(true);
    const abort = new AbortController();
    const cancelled = bus.subscribe(abort.signal);
    const open = bus.subscribe(new AbortController().signal);
    abort.abort();
    expect(await codeOf(cancelled.next(1_000))).toBe(Code.Canceled);
    bus.close();
    expect(await codeOf(open.next(1_000))).toBe(Code.Unavailable);
    expect(bus.size).toBe(0);
  });
});
