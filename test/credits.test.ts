import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reasonOf } from "../src/errors.js";
import { AdminCreateApiKeyRequestSchema, ApiKeysAdminService } from "../src/gen/apikeys/v1/admin_pb.js";
import { ApiKeysService, VerifyCode, VerifyTokenRequestSchema } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { RefillInterval } from "../src/gen/apikeys/v1/resources_pb.js";
import { type Refill, lastRefillBoundary } from "../src/keys/refill.js";
import { usingPostgres } from "./helpers/database.js";
import { clientsFor, PROTOCOLS, startPeerServer, startTestServer, type TestServer } from "./helpers/server.js";
import { send, WIRE_PROTOCOLS } from "./contract/wire.js";

/*
 * Credits (remaining uses): spent by one atomic UPDATE in the database, so they
 * are exact under concurrency and across instances; refilled at boundaries of
 * the verifier's clock, which these tests move.
 */

const DAY_MS = 86_400_000;
let clock = Date.now();
let t: TestServer;
let admin: ReturnType<typeof clientsFor>["admin"];
let data: ReturnType<typeof clientsFor>["data"];
let policyId: string;
let serial = 0;

beforeAll(async () => {
  t = await startTestServer({}, { now: () => clock });
  ({ admin, data } = clientsFor(t.baseUrl, "connect", t.adminToken));
  await data.registerPermissions({ service: "meter", permissions: [{ name: "read", description: "" }] });
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "meter", permissions: ["meter:read"] })).policy!.id;
});
afterAll(() => t.stop());

async function keyWith(init: { remaining?: bigint; refill?: Parameters<typeof admin.adminCreateApiKey>[0]["refill"] }) {
  const created = await admin.adminCreateApiKey({ name: `credits-${++serial}`, policyId, ...init });
  return { id: created.apiKey!.id, token: created.token, apiKey: created.apiKey! };
}

async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

describe("credits on one instance", () => {
  it("each VALID spends its cost; at zero USAGE_EXCEEDED; cost 0 checks without spending; a top-up replaces", async () => {
    const key = await keyWith({ remaining: 3n });
    expect(key.apiKey.remaining).toBe(3n);
    const seen = [];
    for (let i = 0; i < 4; i++) {
      const v = await data.verifyToken({ token: key.token });
      seen.push([v.code, v.remaining]);
    }
    expect(seen).toEqual([
      [VerifyCode.VALID, 2n],
      [VerifyCode.VALID, 1n],
      [VerifyCode.VALID, 0n],
      [VerifyCode.USAGE_EXCEEDED, 0n],
    ]);
    expect(await data.verifyToken({ token: key.token, cost: 0n })).toMatchObject({ valid: false, code: VerifyCode.USAGE_EXCEEDED, remaining: 0n });

    const topped = await admin.adminUpdateApiKey({ id: key.id, remaining: 5n, updateMask: { paths: ["remaining"] } });
    expect(topped.apiKey?.remaining).toBe(5n);
    expect(await data.verifyToken({ token: key.token, cost: 0n })).toMatchObject({ valid: true, remaining: 5n });
    expect(await data.verifyToken({ token: key.token, cost: 2n })).toMatchObject({ valid: true, remaining: 3n, apiKey: { remaining: 3n } });
    // More than is left: refused, nothing spent.
    expect(await data.verifyToken({ token: key.token, cost: 4n })).toMatchObject({ valid: false, code: VerifyCode.USAGE_EXCEEDED, remaining: 3n });
    expect((await admin.adminGetApiKey({ id: key.id })).apiKey?.remaining).toBe(3n);
  });

  it("a refusal for another reason spends nothing and does not say what is left", async () => {
    const key = await keyWith({ remaining: 1n });
    const refused = await data.verifyToken({ token: key.token, allOf: ["meter:write"] });
    expect(refused.code).toBe(VerifyCode.INSUFFICIENT_PERMISSIONS);
    expect(refused.remaining).toBeUndefined();
    expect(await data.verifyToken({ token: key.token, allOf: ["meter:read"] })).toMatchObject({ valid: true, remaining: 0n });
  });

  it("keys without credits answer without remaining; naming remaining unset in the mask makes a key unlimited", async () => {
    const unlimited = await keyWith({});
    const v = await data.verifyToken({ token: unlimited.token });
    expect(v.valid).toBe(true);
    expect(v.remaining).toBeUndefined();
    expect(v.apiKey?.remaining).toBeUndefined();

    const key = await keyWith({ remaining: 0n, refill: { amount: 5n, interval: RefillInterval.DAILY } });
    expect((await data.verifyToken({ token: key.token })).code).toBe(VerifyCode.USAGE_EXCEEDED);
    const updated = await admin.adminUpdateApiKey({ id: key.id, updateMask: { paths: ["remaining"] } });
    expect(updated.apiKey?.remaining).toBeUndefined();
    expect(updated.apiKey?.refill).toBeUndefined();
    const now = await data.verifyToken({ token: key.token });
    expect(now.valid).toBe(true);
    expect(now.remaining).toBeUndefined();
  });

  it("30 concurrent verifications of a key with 10 credits: exactly 10 VALID, and 0 left", async () => {
    const key = await keyWith({ remaining: 10n });
    const verdicts = await Promise.all(Array.from({ length: 30 }, () => data.verifyToken({ token: key.token })));
    expect(verdicts.filter((v) => v.valid)).toHaveLength(10);
    expect(verdicts.filter((v) => v.code === VerifyCode.USAGE_EXCEEDED)).toHaveLength(20);
    // Every VALID saw a different count: nothing was spent twice.
    expect(new Set(verdicts.filter((v) => v.valid).map((v) => v.remaining)).size).toBe(10);
    expect((await admin.adminGetApiKey({ id: key.id })).apiKey?.remaining).toBe(0n);
  });

  it("an admin key out of credits is refused by the auth check with API_KEY_USAGE_EXCEEDED", async () => {
    const adminPolicy = (await admin.adminGetApiKeyPolicies({})).policies.find((p) => p.name === "apikeys-admin")!;
    const created = await admin.adminCreateApiKey({ name: `credits-admin-${++serial}`, policyId: adminPolicy.id, remaining: 1n });
    const own = clientsFor(t.baseUrl, "connect", created.token).admin;
    await own.adminGetApiKeyPolicies({});
    const error = await errorOf(own.adminGetApiKeyPolicies({}));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(reasonOf(error)).toBe("API_KEY_USAGE_EXCEEDED");
    expect(error.rawMessage).toBe("API key has no credits left");
  });

  it("a key with credits calling this service spends one per call, and TestApiKey shows what is left", async () => {
    const key = await keyWith({ remaining: 2n });
    const own = clientsFor(t.baseUrl, "grpc", key.token).data;
    // Cached after the first call, the key still answers with the count just spent.
    expect((await own.testApiKey({})).apiKey?.remaining).toBe(1n);
    expect((await own.testApiKey({})).apiKey?.remaining).toBe(0n);
    const error = await errorOf(own.testApiKey({}));
    expect([error.code, reasonOf(error)]).toEqual([Code.Unauthenticated, "API_KEY_USAGE_EXCEEDED"]);
  });

  it("refuses bad credits, refills and costs with invalid_argument naming the field", async () => {
    const cases: Array<[() => Promise<unknown>, string]> = [
      [() => data.verifyToken({ token: t.adminToken, cost: -1n }), "cost"],
      [() => data.verifyToken({ token: t.adminToken, cost: 1_000_000_001n }), "cost"],
      [() => admin.adminCreateApiKey({ name: "bad-1", policyId, remaining: -1n }), "remaining"],
      [() => admin.adminCreateApiKey({ name: "bad-2", policyId, refill: { amount: 0n, interval: RefillInterval.DAILY } }), "refill.amount"],
      [() => admin.adminCreateApiKey({ name: "bad-3", policyId, refill: { amount: 5n } }), "refill"],
      [() => admin.adminCreateApiKey({ name: "bad-4", policyId, refill: { amount: 5n, interval: RefillInterval.DAILY, period: { seconds: 3600n } } }), "refill"],
      [() => admin.adminCreateApiKey({ name: "bad-5", policyId, refill: { amount: 5n, interval: RefillInterval.MONTHLY, day: 32 } }), "refill.day"],
      [() => admin.adminCreateApiKey({ name: "bad-6", policyId, refill: { amount: 5n, interval: RefillInterval.DAILY, day: 3 } }), "refill.day"],
      [() => admin.adminCreateApiKey({ name: "bad-7", policyId, refill: { amount: 5n, period: { seconds: 1n } } }), "refill.period"],
    ];
    for (const [call, field] of cases) {
      const error = await errorOf(call());
      expect({ code: error.code, reason: reasonOf(error), field }).toEqual({ code: Code.InvalidArgument, reason: "INVALID_FIELD", field });
      expect(error.rawMessage.startsWith(field)).toBe(true);
    }
    expect((await admin.adminGetApiKeys({ filter: "name:bad-" })).apiKeys).toHaveLength(0);
  });
});

describe("refill at the boundary (the verifier's clock, moved by the test)", () => {
  it("DAILY: at 00:00 UTC the credits are set back to the amount (replaced, not added), then spent", async () => {
    clock = Date.now();
    const key = await keyWith({ remaining: 1n, refill: { amount: 3n, interval: RefillInterval.DAILY } });
    expect(key.apiKey.refill).toMatchObject({ amount: 3n, interval: RefillInterval.DAILY });
    expect(await data.verifyToken({ token: key.token })).toMatchObject({ valid: true, remaining: 0n });
    const midnight = Math.floor(clock / DAY_MS) * DAY_MS + DAY_MS;
    clock = midnight - 1;
    expect(await data.verifyToken({ token: key.token })).toMatchObject({ code: VerifyCode.USAGE_EXCEEDED, remaining: 0n });
    clock = midnight;
    expect(await data.verifyToken({ token: key.token })).toMatchObject({ valid: true, remaining: 2n });
    // The same day again: no second refill.
    expect(await data.verifyToken({ token: key.token })).toMatchObject({ valid: true, remaining: 1n });
    // A refill replaces: 1 left at the next boundary still becomes 3, not 4.
    clock = midnight + DAY_MS;
    expect(await data.verifyToken({ token: key.token, cost: 0n })).toMatchObject({ valid: true, remaining: 3n });
    clock = Date.now();
  });

  it("a period counted from its anchor", async () => {
    clock = Date.now();
    const anchor = clock - 30 * 60_000;
    const key = await keyWith({
      remaining: 0n,
      refill: { amount: 2n, period: { seconds: 3600n }, anchor: { seconds: BigInt(Math.floor(anchor / 1000)), nanos: 0 } },
    });
    expect((await data.verifyToken({ token: key.token })).code).toBe(VerifyCode.USAGE_EXCEEDED);
    clock = Math.floor(anchor / 1000) * 1000 + 3_600_000;
    expect(await data.verifyToken({ token: key.token })).toMatchObject({ valid: true, remaining: 1n });
    clock = Date.now();
  });

  it("boundaries: daily at 00:00 UTC, monthly on its day clamped to the month's end, periods from the anchor", () => {
    const at = (iso: string) => Date.parse(iso);
    const daily: Refill = { amount: 1, interval: "daily", periodMs: null, day: null, anchor: null };
    expect(lastRefillBoundary(daily, at("2026-03-05T13:00:00Z"))).toBe(at("2026-03-05T00:00:00Z"));
    const monthly31: Refill = { amount: 1, interval: "monthly", periodMs: null, day: 31, anchor: null };
    expect(lastRefillBoundary(monthly31, at("2026-03-05T00:00:00Z"))).toBe(at("2026-02-28T00:00:00Z"));
    expect(lastRefillBoundary(monthly31, at("2026-03-31T00:00:00Z"))).toBe(at("2026-03-31T00:00:00Z"));
    expect(lastRefillBoundary(monthly31, at("2026-04-30T12:00:00Z"))).toBe(at("2026-04-30T00:00:00Z"));
    const monthly15: Refill = { amount: 1, interval: "monthly", periodMs: null, day: 15, anchor: null };
    expect(lastRefillBoundary(monthly15, at("2026-01-14T23:59:59Z"))).toBe(at("2025-12-15T00:00:00Z"));
    expect(lastRefillBoundary(monthly15, at("2026-01-15T00:00:00Z"))).toBe(at("2026-01-15T00:00:00Z"));
    const period: Refill = { amount: 1, interval: "period", periodMs: 3_600_000, day: null, anchor: new Date(at("2026-01-01T00:30:00Z")) };
    expect(lastRefillBoundary(period, at("2026-01-01T02:29:59Z"))).toBe(at("2026-01-01T01:30:00Z"));
    expect(lastRefillBoundary(period, at("2026-01-01T02:30:00Z"))).toBe(at("2026-01-01T02:30:00Z"));
  });
});

describe("the new fields on every protocol", () => {
  it.each(PROTOCOLS)("create with credits and refill, verify with a cost, read remaining (%s)", async (protocol) => {
    const clients = clientsFor(t.baseUrl, protocol, t.adminToken);
    const created = await clients.admin.adminCreateApiKey({
      name: `credits-${protocol}-${++serial}`,
      policyId,
      remaining: 10n,
      refill: { amount: 10n, interval: RefillInterval.MONTHLY, day: 31 },
    });
    expect(created.apiKey).toMatchObject({ remaining: 10n, refill: { amount: 10n, interval: RefillInterval.MONTHLY, day: 31 } });
    expect(await clients.data.verifyToken({ token: created.token, cost: 4n })).toMatchObject({ valid: true, remaining: 6n });
    const updated = await clients.admin.adminUpdateApiKey({ id: created.apiKey!.id, remaining: 1n, updateMask: { paths: ["remaining"] } });
    expect(updated.apiKey).toMatchObject({ remaining: 1n, refill: { amount: 10n } });
  });

  it.each(WIRE_PROTOCOLS)("raw %s: cost in, remaining out (JSON int64 as a string)", async (protocol) => {
    const key = await keyWith({ remaining: 7n });
    const body = JSON.stringify({ token: key.token, cost: "3" });
    const answer = await send(protocol, t.server.port, "127.0.0.1", {
      method: ApiKeysService.method.verifyToken,
      json: body,
      binary: toBinary(VerifyTokenRequestSchema, create(VerifyTokenRequestSchema, { token: key.token, cost: 3n })),
      rest: { httpMethod: "POST", path: "/api/v1/api_keys/verify", body },
      authorization: `Bearer ${t.adminToken}`,
    });
    expect(answer.code).toBe(0);
    if (answer.json !== undefined) expect(answer.json).toMatchObject({ valid: true, code: "VERIFY_CODE_VALID", remaining: "4" });
    expect((await admin.adminGetApiKey({ id: key.id })).apiKey?.remaining).toBe(4n);
  });

  it("REST: create and update take remaining and refill in JSON", async () => {
    const res = await fetch(`${t.baseUrl}/api/v1/api_keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ name: `credits-rest-${++serial}`, policyId, remaining: "2", refill: { amount: "5", interval: "REFILL_INTERVAL_DAILY" } }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { apiKey: { id: string; remaining: string; refill: unknown } };
    expect(body.apiKey).toMatchObject({ remaining: "2", refill: { amount: "5", interval: "REFILL_INTERVAL_DAILY" } });
    const patched = await fetch(`${t.baseUrl}/api/v1/api_keys/${body.apiKey.id}`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ updateMask: "refill", refill: { amount: "9", period: "3600s" } }),
    });
    expect(patched.status).toBe(200);
    expect(((await patched.json()) as { apiKey: unknown }).apiKey).toMatchObject({ remaining: "2", refill: { amount: "9", period: "3600s" } });
  });

  it("binary create request carries remaining (field 23) and refill (24)", () => {
    // The wire numbers are the contract: a generated client in any language sends these.
    const bytes = toBinary(AdminCreateApiKeyRequestSchema, create(AdminCreateApiKeyRequestSchema, { remaining: 1n }));
    // Tag 23 << 3 = 184 takes two varint bytes (0xb8 0x01), then the value 1.
    expect([...bytes]).toEqual([0xb8, 0x01, 1]);
    expect(ApiKeysAdminService.method.adminGetApiKeyUsage.name).toBe("AdminGetApiKeyUsage");
  });
});

describe.skipIf(!usingPostgres)("credits across two instances on one Postgres (skipped on PGlite: one process per database)", () => {
  let peer: Awaited<ReturnType<typeof startPeerServer>>;
  beforeAll(async () => {
    peer = await startPeerServer(t);
  });
  afterAll(() => peer.stop());

  it("10 credits, 30 concurrent verifications alternating instances: exactly 10 VALID", async () => {
    const key = await keyWith({ remaining: 10n });
    const onA = clientsFor(t.baseUrl, "grpc", t.adminToken).data;
    const onB = clientsFor(peer.baseUrl, "grpc", t.adminToken).data;
    // Warm both caches first, so the spend is not helped by a cold read.
    await onA.verifyToken({ token: key.token, cost: 0n });
    await onB.verifyToken({ token: key.token, cost: 0n });
    const verdicts = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? onA : onB).verifyToken({ token: key.token })));
    expect(verdicts.filter((v) => v.valid)).toHaveLength(10);
    expect(verdicts.filter((v) => v.code === VerifyCode.USAGE_EXCEEDED)).toHaveLength(20);
    expect((await admin.adminGetApiKey({ id: key.id })).apiKey?.remaining).toBe(0n);
  });

  it("a top-up through one instance counts at once on the other", async () => {
    const key = await keyWith({ remaining: 1n });
    const onB = clientsFor(peer.baseUrl, "connect", t.adminToken).data;
    expect(await onB.verifyToken({ token: key.token })).toMatchObject({ valid: true, remaining: 0n });
    expect((await onB.verifyToken({ token: key.token })).code).toBe(VerifyCode.USAGE_EXCEEDED);
    await admin.adminUpdateApiKey({ id: key.id, remaining: 2n, updateMask: { paths: ["remaining"] } });
    // No waiting for an invalidation: the spend reads the row itself.
    expect(await onB.verifyToken({ token: key.token })).toMatchObject({ valid: true, remaining: 1n });
  });
});
