import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reasonOf } from "../src/errors.js";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { usingPostgres } from "./helpers/database.js";
import { clientsFor, startPeerServer, startTestServer, type TestServer } from "./helpers/server.js";

/*
 * Rate limits across instances on Redis (REDIS_URL): the shared Redis at
 * 127.0.0.1:6379 (database 9, a key prefix of this run's own), and a throwaway
 * redis-server of this file's own for the outage.
 */

const SHARED_REDIS = "redis://127.0.0.1:6379/9";
const OUTAGE_PORT = 21379;
const MINUTE = { seconds: 60n };
const prefix = `apikeys-test-global-rate-limits-${randomBytes(4).toString("hex")}:`;
const redisEnv = { REDIS_URL: SHARED_REDIS, APIKEYS_REDIS_KEY_PREFIX: prefix };

let t: TestServer;
let admin: ReturnType<typeof clientsFor>["admin"];
let policyId: string;
let serial = 0;

beforeAll(async () => {
  t = await startTestServer(redisEnv);
  admin = clientsFor(t.baseUrl, "connect", t.adminToken).admin;
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "limited" })).policy!.id;
});
afterAll(async () => {
  await t.stop();
  // Leave the shared Redis as it was.
  const redis = new Redis(SHARED_REDIS);
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
});

async function limitedKey(requests = 10) {
  const created = await admin.adminCreateApiKey({ name: `limited-${++serial}`, policyId, rateLimit: { requests, period: MINUTE } });
  return { id: created.apiKey!.id, token: created.token };
}

async function errorOf(p: Promise<unknown>): Promise<ConnectError | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return ConnectError.from(err);
  }
}

describe("with REDIS_URL", () => {
  it("GetServiceHealth says limits are global, on Redis", async () => {
    const health = await clientsFor(t.baseUrl, "connect").data.getServiceHealth({});
    expect(health.healthy).toBe(true);
    expect(health.components.find((c) => c.name === "rate_limits")).toMatchObject({ healthy: true, message: "global (redis)" });
  });

  it("a 10/min key verified 24 times: exactly 10 VALID, then RATE_LIMITED", async () => {
    const key = await limitedKey();
    const data = clientsFor(t.baseUrl, "grpc", t.adminToken).data;
    const codes = [];
    for (let i = 0; i < 24; i++) codes.push((await data.verifyToken({ token: key.token })).code);
    expect(codes.filter((c) => c === VerifyCode.VALID)).toHaveLength(10);
    expect(codes.slice(10).every((c) => c === VerifyCode.RATE_LIMITED)).toBe(true);
  });

  it("a changed limit starts over, as the per-instance buckets do", async () => {
    const key = await limitedKey(1);
    const data = clientsFor(t.baseUrl, "connect", t.adminToken).data;
    expect((await data.verifyToken({ token: key.token })).code).toBe(VerifyCode.VALID);
    expect((await data.verifyToken({ token: key.token })).code).toBe(VerifyCode.RATE_LIMITED);
    await admin.adminUpdateApiKey({ id: key.id, rateLimit: { requests: 2, period: MINUTE } });
    expect((await data.verifyToken({ token: key.token })).code).toBe(VerifyCode.VALID);
  });
});

describe.skipIf(!usingPostgres)("two instances on one Postgres and one Redis (skipped on PGlite: one process per database)", () => {
  it("a 10/min key verified 24 times alternating instances: exactly 10 VALID", async () => {
    const peer = await startPeerServer(t, redisEnv);
    try {
      const key = await limitedKey();
      const onA = clientsFor(t.baseUrl, "grpc", t.adminToken).data;
      const onB = clientsFor(peer.baseUrl, "grpc", t.adminToken).data;
      const codes = [];
      for (let i = 0; i < 24; i++) codes.push((await (i % 2 === 0 ? onA : onB).verifyToken({ token: key.token })).code);
      expect(codes.filter((c) => c === VerifyCode.VALID)).toHaveLength(10);
      // Both instances refused once the fleet's budget was spent.
      expect(codes.slice(10).every((c) => c === VerifyCode.RATE_LIMITED)).toBe(true);
      // Concurrently too: a fresh key, 30 calls at once across both, 10 pass.
      const burst = await limitedKey();
      const verdicts = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? onA : onB).verifyToken({ token: burst.token })));
      expect(verdicts.filter((v) => v.valid)).toHaveLength(10);
    } finally {
      await peer.stop();
    }
  });
});

describe("Redis unreachable: limited keys fail closed, unlimited keys are unaffected, recovery needs no restart", () => {
  let redis: ChildProcess | undefined;
  let server: TestServer;

  const startRedis = async () => {
    redis = spawn("redis-server", ["--port", String(OUTAGE_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    const probe = new Redis({ port: OUTAGE_PORT, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: null });
    probe.on("error", () => {}); // refused until the server listens; ping retries
    await probe.ping();
    await probe.quit();
  };
  const stopRedis = async () => {
    const child = redis;
    redis = undefined;
    if (child === undefined || child.exitCode !== null) return;
    await new Promise((resolve) => {
      child.once("exit", resolve);
      child.kill("SIGKILL");
    });
  };

  beforeAll(async () => {
    await startRedis();
    server = await startTestServer({ REDIS_URL: `redis://127.0.0.1:${OUTAGE_PORT}`, APIKEYS_REDIS_COMMAND_TIMEOUT_MS: "200" });
  });
  afterAll(async () => {
    await server.stop();
    await stopRedis();
  });

  it("answers unavailable (RATE_LIMIT_UNAVAILABLE, retry in 1 s) for a limited key, VALID for an unlimited one, and health says so", async () => {
    const { admin: a, data } = clientsFor(server.baseUrl, "connect", server.adminToken);
    const p = (await a.adminCreateApiKeyPolicy({ name: "outage" })).policy!.id;
    const limited = await a.adminCreateApiKey({ name: "outage-limited", policyId: p, rateLimit: { requests: 100, period: MINUTE } });
    const unlimited = await a.adminCreateApiKey({ name: "outage-unlimited", policyId: p });
    expect((await data.verifyToken({ token: limited.token })).code).toBe(VerifyCode.VALID);

    await stopRedis();
    const error = await errorOf(data.verifyToken({ token: limited.token }));
    expect(error?.code).toBe(Code.Unavailable);
    expect(error && reasonOf(error)).toBe("RATE_LIMIT_UNAVAILABLE");
    // Over REST: 503 with Retry-After.
    const rest = await fetch(`${server.baseUrl}/api/v1/api_keys/verify`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ token: limited.token }),
    });
    expect(rest.status).toBe(503);
    expect(rest.headers.get("retry-after")).toBe("1");
    expect(await data.verifyToken({ token: unlimited.token })).toMatchObject({ valid: true, code: VerifyCode.VALID });
    const health = await data.getServiceHealth({});
    expect(health.healthy).toBe(false);
    expect(health.components.find((c) => c.name === "rate_limits")?.healthy).toBe(false);
    expect(health.components.find((c) => c.name === "database")?.healthy).toBe(true);

    await startRedis();
    // ioredis reconnects on its own (backing off to 2 s): poll health until it has.
    const deadline = Date.now() + 15_000;
    while (!(await data.getServiceHealth({})).healthy && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await data.getServiceHealth({})).healthy).toBe(true);
    expect((await data.verifyToken({ token: limited.token })).code).toBe(VerifyCode.VALID);
  });
});
