// The cold lookup with the cache on reads a key's own row (JSON) and takes its policy
// and consumer from the cache or a second query; with nothing cacheable it reads all
// of it in one join. Both must build the same record for every kind of key, and a
// policy taken from the cache must never outlive a change to it.
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { RefillInterval } from "../src/gen/apikeys/v1/resources_pb.js";
import { findKeyRecordByTokenHash } from "../src/keys/key.repository.js";
import { findKeyRowByTokenHash, findPolicyWithConsumer, keyRecord } from "../src/keys/key-lookup.js";
import type { PreparedQuery } from "../src/db/database.js";
import { hashToken } from "../src/tokens/token.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
let policyId: string;
let otherPolicyId: string;
const tokens: Record<string, string> = {};
let verifierToken: string;

beforeAll(async () => {
  t = await startTestServer();
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "lookup", permissions: [{ name: "read", description: "" }, { name: "write", description: "" }, { name: "audit", description: "" }] });
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "lookup-main", permissions: ["lookup:write", "lookup:read"] })).policy!.id;
  otherPolicyId = (await admin.adminCreateApiKeyPolicy({ name: "lookup-other", description: "ünïcode ✓", permissions: [] })).policy!.id;
  const { consumer } = await admin.adminCreateConsumer({ username: "lookup-partner" });
  await admin.adminGrantConsumerPolicies({ consumer: consumer!.id, policyIds: [policyId] });
  const inAnHour = timestampFromDate(new Date(Date.now() + 3_600_000));
  const create = async (name: string, extra: Record<string, unknown> = {}) => {
    const created = await admin.adminCreateApiKey({ name, policyId, ...extra });
    tokens[name] = created.token;
    return created.apiKey!.id;
  };
  await create("plain");
  await create("full", {
    description: "every field set: ✓ \u{1F511}",
    metadata: { owner: "team-a", "with space": "a \"quoted\" value" },
    expiresOn: inAnHour,
    allowedCidrs: ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"],
    environment: { tier: "gold", shard: 3, ratio: 0.25, beta: true },
    rateLimit: { requests: 100, period: durationFromMs(60_000) },
  });
  await create("consumer", { consumer: "lookup-partner" });
  await create("credits", { remaining: 1_000_000_000_000n });
  await create("daily", { remaining: 3n, refill: { amount: 5n, interval: RefillInterval.DAILY } });
  await create("monthly", { refill: { amount: 7n, interval: RefillInterval.MONTHLY, day: 31 } });
  await create("period", { refill: { amount: 9n, period: durationFromMs(3_600_000), anchor: timestampFromDate(new Date("2026-01-02T03:04:05.678Z")) } });
  await admin.adminUpdateApiKey({ id: await create("disabled"), enabled: false, updateMask: { paths: ["enabled"] } });
  tokens.empty = (await admin.adminCreateApiKey({ name: "no-permissions", policyId: otherPolicyId })).token;
  // Rotated with a grace period: the previous token still works, and both tokens show it.
  const rotating = await admin.adminCreateApiKey({ name: "rotating", policyId });
  tokens.previous = rotating.token;
  tokens.rotated = (await admin.adminRotateApiKey({ id: rotating.apiKey!.id, gracePeriod: durationFromMs(3_600_000) })).token;
  // A used key has a last_used_on.
  const verifierPolicy = await admin.adminCreateApiKeyPolicy({ name: "lookup-verifier", permissions: ["apikeys:verify"] });
  verifierToken = (await admin.adminCreateApiKey({ name: "lookup-gateway", policyId: verifierPolicy.policy!.id })).token;
  await clientsFor(t.baseUrl, "connect", verifierToken).data.verifyToken({ token: tokens.plain! });
  await t.server.ctx.verifier.flushLastUsed();
});
afterAll(() => t.stop());

/** The record the split path builds: the key's row, then its policy and consumer by id. */
async function splitRead(token: string) {
  const { db, prepared, tokens: settings } = t.server.ctx;
  const row = await findKeyRowByTokenHash(db, hashToken(token, settings.pepper), prepared);
  if (row === undefined) return undefined;
  const read = await findPolicyWithConsumer(db, row.policyId, row.consumerId, prepared);
  const consumer = row.consumerId !== null && read?.consumerUsername ? { id: row.consumerId, username: read.consumerUsername } : null;
  return { record: keyRecord(row, read!.policy, consumer), graceEndsOn: row.graceEndsOn };
}

describe("cold lookup: key row + policy equals the one-join read", () => {
  it("builds the same record for every kind of key and token", async () => {
    const { db, prepared, tokens: settings } = t.server.ctx;
    expect(Object.keys(tokens).length).toBeGreaterThanOrEqual(11);
    for (const [name, token] of Object.entries(tokens)) {
      const hash = hashToken(token, settings.pepper);
      const joined = await findKeyRecordByTokenHash(db, hash, prepared);
      expect(joined, name).toBeDefined();
      // The unprepared form of the join (PGlite's) reads the same.
      expect(await findKeyRecordByTokenHash(db, hash), name).toEqual(joined);
      expect(await splitRead(token), name).toEqual(joined);
    }
    // The corpus covers what the JSON form has to carry.
    const full = (await splitRead(tokens.full!))!.record;
    expect(full.rateLimit).toEqual({ requests: 100, periodMs: 60_000 });
    expect(full.environment).toEqual({ tier: "gold", shard: 3, ratio: 0.25, beta: true });
    expect(full.expiresOn).toBeInstanceOf(Date);
    expect((await splitRead(tokens.consumer!))!.record.consumer?.username).toBe("lookup-partner");
    expect((await splitRead(tokens.credits!))!.record.remaining).toBe(1_000_000_000_000);
    expect((await splitRead(tokens.previous!))!.graceEndsOn).toBeInstanceOf(Date);
    expect((await splitRead(tokens.rotated!))!.record.previousToken?.start).toBe(tokens.previous!.slice(0, 7));
    expect((await splitRead(tokens.plain!))!.record.lastUsedOn).toBeInstanceOf(Date);
    expect((await splitRead(tokens.empty!))!.record.policy.permissions).toEqual([]);
  });

  it("reads timestamps alike in any session time zone, historical offsets and microseconds included", async () => {
    const { db, prepared, tokens: settings } = t.server.ctx;
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const created = await admin.adminCreateApiKey({ name: "historical", policyId });
    // New York kept local mean time (-04:56:02) until 1883-11-18 noon; microseconds past the millisecond are cut off.
    await db
      .updateTable("api_keys")
      .set({
        expires_on: new Date("1883-11-18T12:03:58.123Z"),
        last_used_on: sql<Date>`'1850-06-01 01:02:03.456789+00'::timestamptz`,
        refill_anchor: sql<Date>`'2026-03-08 07:30:00.999999+00'::timestamptz`,
        refill_amount: 1,
        refill_period_ms: 60_000,
      })
      .where("id", "=", created.apiKey!.id)
      .execute();
    const hash = hashToken(created.token, settings.pepper);
    const expected = await findKeyRecordByTokenHash(db, hash, prepared);
    expect(expected!.record.expiresOn?.toISOString()).toBe("1883-11-18T12:03:58.123Z");
    expect(expected!.record.lastUsedOn?.toISOString()).toBe("1850-06-01T01:02:03.456Z");
    // The same reads in a session whose TimeZone is New York's.
    const split = async (run: PreparedQuery | undefined) => {
      const row = await findKeyRowByTokenHash(db, hash, run);
      const read = await findPolicyWithConsumer(db, row!.policyId, row!.consumerId, run);
      return { record: keyRecord(row!, read!.policy, null), graceEndsOn: row!.graceEndsOn };
    };
    if (prepared === undefined) {
      // PGlite: one connection, set for the length of the reads.
      await sql`set timezone = 'America/New_York'`.execute(db);
      try {
        expect(await split(undefined)).toEqual(expected);
      } finally {
        await sql`reset timezone`.execute(db);
      }
    } else {
      const client = new pg.Client({ connectionString: t.database.url });
      await client.connect();
      try {
        await client.query("set timezone = 'America/New_York'");
        const inNewYork: PreparedQuery = async (name, text, values) => (await client.query({ name, text, values: [...values] })).rows;
        expect(await split(inNewYork)).toEqual(expected);
      } finally {
        await client.end();
      }
    }
  });

  it("finds nothing for an unknown hash, and no policy for an unknown id", async () => {
    const { db, prepared } = t.server.ctx;
    expect(await findKeyRowByTokenHash(db, new Uint8Array(32), prepared)).toBeUndefined();
    expect(await findPolicyWithConsumer(db, "00000000-0000-4000-8000-000000000000", null, prepared)).toBeUndefined();
  });
});

describe("cold lookup of a key whose policy is cached", () => {
  it("reads only the key's row, and never answers with a policy that changed", async () => {
    const { verifier } = t.server.ctx;
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    // 10.1.2.3 is inside the "full" key's allow-list; the other keys allow any origin.
    const verify = (token: string, allOf: string[] = []) => verifier.verify(token, allOf, [], "10.1.2.3");
    verifier.cache.clear();
    // The first key of the policy reads its row, then the policy.
    let before = verifier.policyLookups;
    expect((await verify(tokens.plain!, ["lookup:read"])).code).toBe(VerifyCode.VALID);
    expect(verifier.policyLookups - before).toBe(1);
    // Another key of the same policy: its row only, with the same policy object.
    before = verifier.policyLookups;
    const second = await verify(tokens.full!, ["lookup:read"]);
    expect(second.code).toBe(VerifyCode.VALID);
    expect(verifier.policyLookups - before).toBe(0);
    expect(second.key).toEqual((await findKeyRecordByTokenHash(t.server.ctx.db, hashToken(tokens.full!, t.server.ctx.tokens.pepper)))!.record);
    // A key with a consumer not seen yet reads the policy row with it.
    before = verifier.policyLookups;
    expect((await verify(tokens.consumer!)).key?.consumer?.username).toBe("lookup-partner");
    expect(verifier.policyLookups - before).toBe(1);

    // Changing the policy drops it at once on this instance: a cold key of it sees the change.
    await admin.adminUpdateApiKeyPolicy({ id: policyId, permissions: ["lookup:read", "lookup:audit"], updateMask: { paths: ["permissions"] } });
    before = verifier.policyLookups;
    const after = await verify(tokens.daily!, ["lookup:audit"]);
    expect(after.code).toBe(VerifyCode.VALID);
    expect(verifier.policyLookups - before).toBe(1);
    expect((await verify(tokens.plain!, ["lookup:write"])).code).toBe(VerifyCode.INSUFFICIENT_PERMISSIONS);

    // An invalidation that lands while a key is read keeps the policy it read out of the cache.
    verifier.cache.clear();
    const racing = verify(tokens.monthly!);
    verifier.invalidate({ kind: "policy", id: policyId });
    expect((await racing).code).toBe(VerifyCode.VALID);
    expect(verifier.cache.knownPolicy(policyId)).toBeUndefined();
    expect(verifier.cache.size).toBe(0);
  });

  it("takes nothing from the cache while it cannot cache (listener down): one join per lookup", async () => {
    const { verifier, db } = t.server.ctx;
    verifier.cache.clear();
    expect((await verifier.verify(tokens.plain!, [], [])).code).toBe(VerifyCode.VALID);
    expect(verifier.cache.knownPolicy(policyId)).toBeDefined();
    // A grant made behind the server's back (no invalidation): the cached policy does not have it.
    await db.insertInto("policy_permissions").values({ policy_id: policyId, permission: "lookup:write" }).execute();
    // Control: with the listener up, a cold key of the known policy takes the cached policy.
    expect((await verifier.verify(tokens.period!, ["lookup:write"], [])).code).toBe(VerifyCode.INSUFFICIENT_PERMISSIONS);
    verifier.setListening(false);
    try {
      const before = verifier.policyLookups;
      const lookups = verifier.dbLookups;
      // Listener down: nothing read now can be cached, so the key and its policy are read together.
      expect((await verifier.verify(tokens.credits!, ["lookup:write"], [])).code).toBe(VerifyCode.VALID);
      expect(verifier.dbLookups - lookups).toBe(1);
      expect(verifier.policyLookups - before).toBe(0);
    } finally {
      verifier.setListening(true);
    }
  });
});
