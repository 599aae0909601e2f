import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readConfig } from "../src/config.js";
import { reasonOf } from "../src/errors.js";
import { UsageGranularity } from "../src/gen/apikeys/v1/admin_pb.js";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { createLogger } from "../src/logger.js";
import { startServer } from "../src/server.js";
import { generateToken } from "../src/tokens/token.js";
import { pruneUsage } from "../src/usage/usage-recorder.js";
import { createTestDatabase, type TestDatabase, usingPostgres } from "./helpers/database.js";
import { spawnServer } from "./helpers/process.js";
import { clientsFor, PROTOCOLS, startPeerServer, startTestServer, type TestServer } from "./helpers/server.js";

/*
 * Usage analytics: every verification outcome of a known key is counted per key
 * per hour in memory and flushed in batches; AdminGetApiKeyUsage reads them back.
 */

const HOUR_MS = 3_600_000;
let t: TestServer;
let admin: ReturnType<typeof clientsFor>["admin"];
let data: ReturnType<typeof clientsFor>["data"];
let policyId: string;
let serial = 0;

beforeAll(async () => {
  t = await startTestServer();
  ({ admin, data } = clientsFor(t.baseUrl, "connect", t.adminToken));
  await data.registerPermissions({ service: "stats", permissions: [{ name: "read", description: "" }] });
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "stats", permissions: ["stats:read"] })).policy!.id;
});
afterAll(() => t.stop());

async function newKey(init: { remaining?: bigint } = {}) {
  const created = await admin.adminCreateApiKey({ name: `usage-${++serial}`, policyId, ...init });
  return { id: created.apiKey!.id, token: created.token };
}

async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

/** Makes 4 VALID, 2 INSUFFICIENT_PERMISSIONS, 1 USAGE_EXCEEDED, 3 DISABLED through `verify`. */
async function mixedTraffic(
  verify: (req: { token: string; allOf?: string[] }) => Promise<unknown>,
  key: { id: string; token: string },
  disabledEverywhere: () => Promise<void> = async () => {},
) {
  for (let i = 0; i < 4; i++) await verify({ token: key.token, allOf: ["stats:read"] });
  for (let i = 0; i < 2; i++) await verify({ token: key.token, allOf: ["stats:write"] });
  await verify({ token: key.token });
  await admin.adminUpdateApiKey({ id: key.id, enabled: false });
  await disabledEverywhere();
  for (let i = 0; i < 3; i++) await verify({ token: key.token });
}

const EXPECTED = {
  VERIFY_CODE_VALID: 4n,
  VERIFY_CODE_INSUFFICIENT_PERMISSIONS: 2n,
  VERIFY_CODE_USAGE_EXCEEDED: 1n,
  VERIFY_CODE_DISABLED: 3n,
};

describe("AdminGetApiKeyUsage on one instance", () => {
  it("counts every outcome per hour and per day; totals equal the verifications made", async () => {
    const key = await newKey({ remaining: 4n });
    await mixedTraffic((req) => data.verifyToken(req), key);
    await t.server.ctx.verifier.usage.flush();

    const daily = await admin.adminGetApiKeyUsage({ id: key.id });
    expect(daily.totals).toEqual(EXPECTED);
    expect(daily.buckets).toHaveLength(1);
    expect(daily.buckets[0]!.counts).toEqual(EXPECTED);
    const dayStart = Math.floor(Date.now() / (24 * HOUR_MS)) * 24 * HOUR_MS;
    expect(Number(daily.buckets[0]!.startTime!.seconds) * 1000).toBe(dayStart);

    const hourly = await admin.adminGetApiKeyUsage({ id: key.id, granularity: UsageGranularity.HOUR, startTime: timestampFromDate(new Date(Date.now() - 2 * HOUR_MS)) });
    expect(hourly.totals).toEqual(EXPECTED);
    const sum = (code: keyof typeof EXPECTED) => hourly.buckets.reduce((n, b) => n + (b.counts[code] ?? 0n), 0n);
    expect(sum("VERIFY_CODE_VALID")).toBe(4n);
    for (const b of hourly.buckets) expect(Number(b.startTime!.seconds) % 3600).toBe(0);
  });

  it("a second flush adds to the same rows (one upsert per flush)", async () => {
    const key = await newKey();
    await data.verifyToken({ token: key.token });
    await t.server.ctx.verifier.usage.flush();
    await data.verifyToken({ token: key.token });
    await data.verifyToken({ token: key.token });
    await t.server.ctx.verifier.usage.flush();
    expect((await admin.adminGetApiKeyUsage({ id: key.id })).totals).toEqual({ VERIFY_CODE_VALID: 3n });
    const { rows } = await sql<{ n: string }>`select count(*)::text as n from key_usage where key_id = ${key.id}`.execute(t.server.ctx.db);
    expect(rows[0]!.n).toBe("1");
  });

  it("a key never verified has no buckets and empty totals; a range without traffic likewise", async () => {
    const key = await newKey();
    expect(await admin.adminGetApiKeyUsage({ id: key.id })).toMatchObject({ buckets: [], totals: {} });
  });

  it.each(PROTOCOLS)("answers on %s", async (protocol) => {
    const key = await newKey();
    await data.verifyToken({ token: key.token });
    await t.server.ctx.verifier.usage.flush();
    const usage = await clientsFor(t.baseUrl, protocol, t.adminToken).admin.adminGetApiKeyUsage({ id: key.id, granularity: UsageGranularity.HOUR });
    expect(usage.totals).toEqual({ VERIFY_CODE_VALID: 1n });
  });

  it("answers over REST: GET /api/v1/api_keys/{id}/usage", async () => {
    const key = await newKey();
    await data.verifyToken({ token: key.token });
    await data.verifyToken({ token: key.token, allOf: ["stats:write"] });
    await t.server.ctx.verifier.usage.flush();
    const res = await fetch(`${t.baseUrl}/api/v1/api_keys/${key.id}/usage?granularity=USAGE_GRANULARITY_HOUR`, {
      headers: { authorization: `Bearer ${t.adminToken}` },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { buckets: Array<{ startTime: string; counts: Record<string, string> }>; totals: Record<string, string> };
    expect(body.totals).toEqual({ VERIFY_CODE_VALID: "1", VERIFY_CODE_INSUFFICIENT_PERMISSIONS: "1" });
    expect(body.buckets[0]!.startTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:00:00Z$/);
    const bad = await fetch(`${t.baseUrl}/api/v1/api_keys/${key.id}/usage?granularity=BOGUS`, { headers: { authorization: `Bearer ${t.adminToken}` } });
    expect(bad.status).toBe(400);
  });

  it("refuses an unknown key, a backwards range and a range too long for its granularity", async () => {
    const missing = await errorOf(admin.adminGetApiKeyUsage({ id: crypto.randomUUID() }));
    expect([missing.code, reasonOf(missing)]).toEqual([Code.NotFound, "NOT_FOUND"]);
    const key = await newKey();
    const now = Date.now();
    const backwards = await errorOf(admin.adminGetApiKeyUsage({ id: key.id, startTime: timestampFromDate(new Date(now)), endTime: timestampFromDate(new Date(now - HOUR_MS)) }));
    expect([backwards.code, reasonOf(backwards)]).toEqual([Code.InvalidArgument, "INVALID_FIELD"]);
    const tooLong = await errorOf(
      admin.adminGetApiKeyUsage({ id: key.id, granularity: UsageGranularity.HOUR, startTime: timestampFromDate(new Date(now - 40 * 24 * HOUR_MS)) }),
    );
    expect(tooLong.code).toBe(Code.InvalidArgument);
    // Days allow a year.
    expect((await admin.adminGetApiKeyUsage({ id: key.id, startTime: timestampFromDate(new Date(now - 300 * 24 * HOUR_MS)) })).buckets).toEqual([]);
    const badId = await errorOf(admin.adminGetApiKeyUsage({ id: "nope" }));
    expect(badId.code).toBe(Code.InvalidArgument);
  });

  it("needs apikeys:keys.read", async () => {
    const reader = await newKey();
    const error = await errorOf(clientsFor(t.baseUrl, "connect", reader.token).admin.adminGetApiKeyUsage({ id: reader.id }));
    expect([error.code, reasonOf(error)]).toEqual([Code.PermissionDenied, "PERMISSION_MISSING"]);
  });

  it("retention: hours older than the retention are pruned, newer ones kept", async () => {
    const key = await newKey();
    const now = Date.now();
    const hour = (ago: number) => new Date(Math.floor((now - ago) / HOUR_MS) * HOUR_MS);
    const day = 24 * HOUR_MS;
    for (const at of [hour(91 * day), hour(89 * day)]) {
      await t.server.ctx.db.insertInto("key_usage").values({ key_id: key.id, hour: at, code: "VERIFY_CODE_VALID", count: 5 }).execute();
    }
    expect(await pruneUsage(t.server.ctx.db, 90 * day, now)).toBe(1);
    const left = await t.server.ctx.db.selectFrom("key_usage").select("hour").where("key_id", "=", key.id).execute();
    expect(left.map((r) => r.hour.getTime())).toEqual([hour(89 * day).getTime()]);
  });

  it("deleting a key deletes its usage; counts of a key deleted before the flush are skipped, the rest written", async () => {
    const gone = await newKey();
    const kept = await newKey();
    await data.verifyToken({ token: gone.token });
    await data.verifyToken({ token: kept.token });
    await admin.adminDeleteApiKey({ id: gone.id });
    await t.server.ctx.verifier.usage.flush();
    expect(t.server.ctx.verifier.usage.size).toBe(0);
    expect((await admin.adminGetApiKeyUsage({ id: kept.id })).totals).toEqual({ VERIFY_CODE_VALID: 1n });
    const { rows } = await sql<{ n: string }>`select count(*)::text as n from key_usage where key_id = ${gone.id}`.execute(t.server.ctx.db);
    expect(rows[0]!.n).toBe("0");
  });
});

describe.skipIf(!usingPostgres)("two instances on one Postgres (skipped on PGlite: one process per database)", () => {
  it("totals equal the verifications made on both, per outcome", async () => {
    const peer = await startPeerServer(t);
    try {
      const key = await newKey({ remaining: 4n });
      const onA = clientsFor(t.baseUrl, "grpc", t.adminToken).data;
      const onB = clientsFor(peer.baseUrl, "grpc", t.adminToken).data;
      let n = 0;
      // The disable reaches the peer's cache by NOTIFY, a moment after commit: wait for it there
      // (it relays the event only after evicting), or a cached "enabled" would answer in between.
      const watching = new AbortController();
      const events = peer.server.ctx.invalidations.subscribe(watching.signal);
      const disabledOnPeer = async () => {
        for (;;) {
          const event = await events.next(5_000);
          if (event === undefined) throw new Error("the peer never heard of the disable");
          if (event.kind === "key" && event.id === key.id) break;
        }
        watching.abort();
      };
      await mixedTraffic((req) => (n++ % 2 === 0 ? onA : onB).verifyToken(req), key, disabledOnPeer);
      await Promise.all([t.server.ctx.verifier.usage.flush(), peer.server.ctx.verifier.usage.flush()]);
      expect((await admin.adminGetApiKeyUsage({ id: key.id })).totals).toEqual(EXPECTED);
    } finally {
      await peer.stop();
    }
  });
});

describe("graceful stop", () => {
  let database: TestDatabase;
  let dir: string | undefined;
  afterAll(async () => {
    await database?.drop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("SIGTERM flushes every count before the process exits", async () => {
    database = await createTestDatabase();
    dir = database.url === undefined ? mkdtempSync(join(tmpdir(), "apikeys-usage-")) : undefined;
    const token = generateToken("ak");
    const env = { ...(database.url ? { DATABASE_URL: database.url } : { APIKEYS_DATA_DIR: dir! }), APIKEYS_BOOTSTRAP_TOKEN: token };
    const child = await spawnServer(env);
    let id: string;
    try {
      const clients = clientsFor(`http://127.0.0.1:${child.port}`, "connect", token);
      const policy = (await clients.admin.adminCreateApiKeyPolicy({ name: "sigterm" })).policy!;
      const created = await clients.admin.adminCreateApiKey({ name: "sigterm-key", policyId: policy.id });
      id = created.apiKey!.id;
      // Well inside the 5 s flush interval: only the shutdown flush can write these.
      for (let i = 0; i < 7; i++) await clients.data.verifyToken({ token: created.token });
    } finally {
      expect(await child.stop("SIGTERM")).toBe(0);
    }
    // Read back through a fresh in-process server on the same database.
    const config = readConfig({ ...env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent" });
    const server = await startServer(config, createLogger("silent"));
    try {
      const usage = await clientsFor(`http://127.0.0.1:${server.port}`, "connect", token).admin.adminGetApiKeyUsage({ id });
      expect(usage.totals).toEqual({ VERIFY_CODE_VALID: 7n });
    } finally {
      await server.stop();
    }
  }, 60_000);
});
