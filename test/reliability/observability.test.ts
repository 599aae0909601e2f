import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateToken } from "../../src/tokens/token.js";
import { createTestDatabase, type TestDatabase, usingPostgres } from "../helpers/database.js";
import { codeOf } from "../helpers/errors.js";
import { type ServerProcess, spawnServer } from "../helpers/process.js";
import { clientsFor } from "../helpers/server.js";

/* A real process with a separate admin port: request logs on stdout, metrics on the admin port only. */

let database: TestDatabase;
let server: ServerProcess;
let dataUrl: string;
let adminUrl: string;
let adminKeyId: string;
const adminToken = generateToken("ak");

beforeAll(async () => {
  database = await createTestDatabase();
  server = await spawnServer(
    {
      APIKEYS_BOOTSTRAP_TOKEN: adminToken,
      ADMIN_PORT: "0",
      LOG_LEVEL: "info",
      ...(database.url !== undefined ? { DATABASE_URL: database.url } : { APIKEYS_DATA_DIR: "memory://" }),
    },
    90_000,
  );
  dataUrl = `http://127.0.0.1:${server.port}`;
  adminUrl = `http://127.0.0.1:${server.adminPort}`;
  const { admin } = clientsFor(dataUrl, "connect", adminToken, adminUrl);
  adminKeyId = (await admin.adminGetApiKeys({})).apiKeys.find((k) => k.name === "bootstrap")!.id;
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await database?.drop();
});

async function scrape(): Promise<string> {
  const res = await fetch(`${adminUrl}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
  return res.text();
}

/** The value of one sample, matched by name and exact label set text; undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("metrics", () => {
  it("counts RPCs by method and code, verify outcomes by verdict, and cache traffic", async () => {
    const { admin, data } = clientsFor(dataUrl, "grpc", adminToken, adminUrl);
    const before = await scrape();
    const created = "apikeys.v1.ApiKeysAdminService/AdminCreateApiKeyPolicy";
    const okBefore = sample(before, `apikeys_rpc_requests_total{method="${created}",code="ok"}`) ?? 0;
    const policy = await admin.adminCreateApiKeyPolicy({ name: "metrics", permissions: ["apikeys:verify"] });
    expect(await codeOf(admin.adminCreateApiKeyPolicy({ name: "metrics", permissions: [] }))).not.toBe("ok");
    const key = await admin.adminCreateApiKey({ name: "metrics", policyId: policy.policy!.id });
    for (let i = 0; i < 3; i++) await data.verifyToken({ token: key.token });
    await data.verifyToken({ token: generateToken("ak") });
    expect(await codeOf(clientsFor(dataUrl, "connect", "garbage").data.testApiKey({}))).not.toBe("ok");

    const after = await scrape();
    expect(sample(after, `apikeys_rpc_requests_total{method="${created}",code="ok"}`)).toBe(okBefore + 1);
    expect(sample(after, `apikeys_rpc_requests_total{method="${created}",code="already_exists"}`)).toBe(1);
    expect(sample(after, `apikeys_rpc_requests_total{method="apikeys.v1.ApiKeysService/TestApiKey",code="unauthenticated"}`)).toBe(1);
    expect(sample(after, `apikeys_verify_outcomes_total{code="VALID"}`)).toBe(3);
    expect(sample(after, `apikeys_verify_outcomes_total{code="NOT_FOUND"}`)).toBe(1);
    expect(sample(after, `apikeys_rpc_duration_seconds_count{method="${created}",code="ok"}`)).toBe(okBefore + 1);
    expect(sample(after, "apikeys_cache_hits_total")).toBeGreaterThanOrEqual(2);
    expect(sample(after, "apikeys_cache_misses_total")).toBeGreaterThanOrEqual(1);
    expect(sample(after, "apikeys_cache_evictions_total")).toBe(0);
    expect(sample(after, "apikeys_cache_entries")).toBeGreaterThanOrEqual(1);
    expect(sample(after, "apikeys_invalidation_listening")).toBe(1);
    expect(sample(after, "apikeys_process_resident_memory_bytes")).toBeGreaterThan(0);
  });

  it("measures invalidation lag from writes", async () => {
    const { admin } = clientsFor(dataUrl, "connect", adminToken, adminUrl);
    const before = sample(await scrape(), "apikeys_invalidation_lag_seconds_count") ?? 0;
    const policy = await admin.adminCreateApiKeyPolicy({ name: "lag", permissions: [] });
    const key = await admin.adminCreateApiKey({ name: "lag", policyId: policy.policy!.id });
    await admin.adminUpdateApiKey({ id: key.apiKey!.id, enabled: false });
    await new Promise((r) => setTimeout(r, 200));
    const after = await scrape();
    expect(sample(after, "apikeys_invalidation_lag_seconds_count")).toBeGreaterThan(before);
    expect(sample(after, "apikeys_invalidation_lag_seconds_sum")).toBeLessThan(60);
  });

  it.runIf(usingPostgres)("reports the Postgres pool", async () => {
    const text = await scrape();
    expect(sample(text, 'apikeys_db_pool_connections{state="idle"}')).toBeGreaterThanOrEqual(0);
    expect(sample(text, 'apikeys_db_pool_connections{state="busy"}')).toBeGreaterThanOrEqual(0);
    expect(sample(text, "apikeys_db_pool_waiting")).toBe(0);
  });

  it("is served on the admin port only", async () => {
    const res = await fetch(`${dataUrl}/metrics`);
    await res.arrayBuffer();
    expect(res.status).toBe(404);
  });
});

describe("request logs", () => {
  it("writes one JSON line per RPC with method, code, duration and key id", async () => {
    const { admin } = clientsFor(dataUrl, "connect", adminToken, adminUrl);
    await admin.adminGetApiKeyPolicies({});
    expect(await codeOf(clientsFor(dataUrl, "connect", undefined, adminUrl).admin.adminGetApiKeyPolicies({}))).not.toBe("ok");
    await new Promise((r) => setTimeout(r, 100));
    const lines = server
      .output()
      .split("\n")
      .filter((l) => l.includes('"msg":"rpc"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const policies = lines.filter((l) => l.rpc === "apikeys.v1.ApiKeysAdminService/AdminGetApiKeyPolicies");
    expect(policies).toHaveLength(2);
    expect(policies[0]).toMatchObject({ level: 30, code: "ok", key_id: adminKeyId, service: "apikeys" });
    expect(policies[0]!.duration_ms).toEqual(expect.any(Number));
    expect(policies[1]).toMatchObject({ code: "unauthenticated" });
    expect(policies[1]!.key_id).toBeUndefined();
    for (const line of lines) expect(Object.keys(line)).toEqual(expect.arrayContaining(["rpc", "code", "duration_ms", "time"]));
    expect(server.output()).not.toContain(adminToken);
  });
});
