import net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database } from "../../src/db/schema.js";
import { ApiKeysService } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../src/gen/grpc/health/v1/health_pb.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/*
 * Long-lived streams are capped per key and per address, end when their own key
 * may no longer open them, and Health/Watch streams share one database poll.
 */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({
    APIKEYS_MAX_WATCH_STREAMS_PER_KEY: "2",
    APIKEYS_MAX_WATCH_STREAMS_PER_ADDRESS: "3",
    APIKEYS_MAX_HEALTH_WATCH_STREAMS_PER_ADDRESS: "40",
  });
});
afterAll(() => t.stop());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function watcherKey(name: string) {
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const policy = (await admin.adminCreateApiKeyPolicy({ name: `${name}-policy`, permissions: ["apikeys:verify"] })).policy!;
  const key = await admin.adminCreateApiKey({ name, policyId: policy.id });
  return { token: key.token, id: key.apiKey!.id, policyId: policy.id };
}

/** An open WatchInvalidations stream (resync received), or the error that refused it. */
async function openWatch(token: string, localAddress?: string) {
  const abort = new AbortController();
  const transport = createGrpcTransport({
    baseUrl: t.baseUrl,
    interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))],
    nodeOptions: { createConnection: () => net.connect({ host: "127.0.0.1", port: t.server.port, localAddress }) },
  });
  const data = createClient(ApiKeysService, transport);
  const events = data.watchInvalidations({}, { signal: abort.signal, timeoutMs: 0 })[Symbol.asyncIterator]();
  try {
    const first = await events.next();
    expect(first.value?.event.case).toBe("resync");
  } catch (err) {
    return { error: ConnectError.from(err), close: () => abort.abort() };
  }
  return { events, close: () => abort.abort() };
}

describe("WatchInvalidations", () => {
  it("caps streams per key and per address with resource_exhausted", async () => {
    const a = await watcherKey("watch-cap-a");
    const b = await watcherKey("watch-cap-b");
    const c = await watcherKey("watch-cap-c");
    const a1 = await openWatch(a.token);
    const a2 = await openWatch(a.token);
    expect([a1.error, a2.error]).toEqual([undefined, undefined]);
    const a3 = await openWatch(a.token);
    expect(a3.error?.code).toBe(Code.ResourceExhausted);
    expect(a3.error?.message).toMatch(/for this key \(at most 2\)/);

    // Another key from the same address: allowed up to the address cap (3).
    const b1 = await openWatch(b.token);
    expect(b1.error).toBeUndefined();
    const c1 = await openWatch(c.token);
    expect(c1.error?.code).toBe(Code.ResourceExhausted);
    expect(c1.error?.message).toMatch(/for this address \(at most 3\)/);
    // The same key from another address is still held to its key cap; another key is not.
    const c2 = await openWatch(c.token, "127.0.0.2");
    expect(c2.error).toBeUndefined();

    // A closed stream frees its slots.
    a1.close();
    await sleep(200);
    const a4 = await openWatch(a.token);
    expect(a4.error).toBeUndefined();
    for (const s of [a2, a4, b1, c2]) s.close();
  });

  it.each(["deleted", "disabled", "moved to a policy without apikeys:verify"])("ends a stream when its own key is %s", async (change) => {
    const own = await watcherKey(`watch-own-${change.split(" ")[0]}`);
    const other = await watcherKey(`watch-other-${change.split(" ")[0]}`);
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const stream = await openWatch(own.token);
    const events = stream.events!;

    // Another key's change is delivered and the stream goes on.
    await admin.adminUpdateApiKey({ id: other.id, enabled: false });
    expect((await events.next()).value?.event).toMatchObject({ case: "invalidation", value: { id: other.id } });

    if (change === "deleted") await admin.adminDeleteApiKey({ id: own.id });
    else if (change === "disabled") await admin.adminUpdateApiKey({ id: own.id, enabled: false });
    else {
      const bare = (await admin.adminCreateApiKeyPolicy({ name: "watch-bare-policy", permissions: [] })).policy!;
      await admin.adminUpdateApiKey({ id: own.id, policyId: bare.id });
    }
    // Its own invalidation is still delivered, so the client's cache drops the key, then the stream ends.
    expect((await events.next()).value?.event).toMatchObject({ case: "invalidation", value: { id: own.id } });
    const ended = await events.next().then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    expect(ended?.code).toBe(change.startsWith("moved") ? Code.PermissionDenied : Code.Unauthenticated);
    stream.close();
  });
});

describe("Health/Watch", () => {
  function healthClient() {
    return createClient(Health, createGrpcTransport({ baseUrl: t.baseUrl }));
  }

  it("shares one database poll among all watchers", async () => {
    // Counts the health probe's queries on the server's own database handle.
    let probes = 0;
    const db = t.server.ctx.db;
    t.server.ctx.db = db.withPlugin({
      transformQuery: (args) => {
        const node = args.node as { kind: string; sqlFragments?: readonly string[] };
        if (node.kind === "RawNode" && node.sqlFragments?.join("").trim() === "select 1") probes++;
        return args.node;
      },
      transformResult: async (args) => args.result,
    }) as Kysely<Database>;
    const aborts: AbortController[] = [];
    try {
      const firsts = await Promise.all(
        Array.from({ length: 30 }, async () => {
          const abort = new AbortController();
          aborts.push(abort);
          const events = healthClient().watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
          return (await events.next()).value?.status;
        }),
      );
      expect(firsts.every((s) => s === Status.SERVING)).toBe(true);
      // One poll every 5 s for everyone: 30 per-stream polls would be ≥ 30 here.
      await sleep(5_500);
      expect(probes).toBeGreaterThanOrEqual(1);
      expect(probes).toBeLessThanOrEqual(3);
      expect(t.server.ctx.databaseHealth.size).toBe(30);
    } finally {
      for (const abort of aborts) abort.abort();
      t.server.ctx.db = db;
    }
    await sleep(200);
    expect(t.server.ctx.databaseHealth.size).toBe(0);
  });

  it("caps Health/Watch streams per address", async () => {
    const aborts = Array.from({ length: 41 }, () => new AbortController());
    const results = await Promise.all(
      aborts.map(async (abort) => {
        const events = healthClient().watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
        return events.next().then(
          () => undefined,
          (err: unknown) => ConnectError.from(err).code,
        );
      }),
    );
    expect(results.filter((r) => r === undefined)).toHaveLength(40);
    expect(results.filter((r) => r === Code.ResourceExhausted)).toHaveLength(1);
    for (const abort of aborts) abort.abort();
  });
});
