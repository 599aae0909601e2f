import { describe, expect, it } from "vitest";
import { ListenerLiveness } from "../src/db/listener-liveness.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("ListenerLiveness", () => {
  it("pings, counts echoes in time as alive, and reports the first missed echo once", async () => {
    const sent: string[] = [];
    const events: string[] = [];
    let delivering = true;
    const liveness: ListenerLiveness = new ListenerLiveness(
      40,
      async (payload) => {
        sent.push(payload);
        if (delivering) setTimeout(() => liveness.echo(payload), 5);
      },
      () => events.push("alive"),
      (reason) => events.push(`missed: ${reason}`),
      (err) => events.push(`error: ${err.message}`),
    );
    liveness.start();
    await sleep(110);
    expect(events.length).toBeGreaterThanOrEqual(1);
    expect(new Set(events)).toEqual(new Set(["alive"]));
    expect(liveness.lastEchoAt).toBeGreaterThan(Date.now() - 100);
    // A stale or foreign payload proves nothing.
    liveness.echo("0");
    delivering = false;
    await sleep(150);
    expect(events.filter((e) => e.startsWith("missed"))).toEqual(["missed: no echo of its self-NOTIFY within 40 ms"]);
    const pings = sent.length;
    await sleep(100);
    expect(sent.length).toBe(pings);
  });

  it("treats a ping that cannot be sent as a missed echo when its deadline passes", async () => {
    const events: string[] = [];
    const liveness = new ListenerLiveness(
      30,
      async () => {
        throw new Error("database unavailable");
      },
      () => events.push("alive"),
      () => events.push("missed"),
      (err) => events.push(`error: ${err.message}`),
    );
    liveness.start();
    await sleep(80);
    expect(events).toEqual(["error: database unavailable", "missed"]);
  });
});
