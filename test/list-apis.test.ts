import { Code } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiKeyView, AuditCallKind, AuditEventView } from "../src/gen/apikeys/v1/admin_pb.js";
import { AuditStage } from "../src/gen/apikeys/v1/audit_pb.js";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { rejection } from "./helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "./helpers/server.js";

/*
 * The paged, filtered and sorted list RPCs the dashboard and CLI page through,
 * over every protocol and REST, against a real server and database.
 */

let t: TestServer;
let readerPolicy: string;
let writerPolicy: string;
const ids: Record<string, string> = {};
const DAY = 24 * 3600 * 1000;

beforeAll(async () => {
  t = await startTestServer();
  const { admin, data } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "shop", permissions: [{ name: "read", description: "" }, { name: "write", description: "" }] });
  readerPolicy = (await admin.adminCreateApiKeyPolicy({ name: "shop-reader", permissions: ["shop:read"] })).policy!.id;
  writerPolicy = (await admin.adminCreateApiKeyPolicy({ name: "shop-writer", permissions: ["shop:read", "shop:write"] })).policy!.id;
  await admin.adminCreateConsumer({ username: "team-alpha" });
  await admin.adminGrantConsumerPolicies({ consumer: "team-alpha", policyIds: [writerPolicy] });
  const make = async (name: string, options: { policyId?: string; expiresInMs?: number; consumer?: string } = {}) => {
    const created = await admin.adminCreateApiKey({
      name,
      policyId: options.policyId ?? readerPolicy,
      consumer: options.consumer,
      expiresOn: options.expiresInMs === undefined ? undefined : timestampFromDate(new Date(Date.now() + options.expiresInMs)),
    });
    ids[name] = created.apiKey!.id;
    return created.token;
  };
  const usedToken = await make("orders-worker");
  await make("Billing Worker", { policyId: writerPolicy, consumer: "team-alpha" });
  await make("soon-gone", { expiresInMs: 2 * DAY });
  await make("far-future", { expiresInMs: 300 * DAY });
  await make("switched-off");
  await admin.adminUpdateApiKey({ id: ids["switched-off"]!, enabled: false });
  await make("50%_literal");
  await data.verifyToken({ token: usedToken, allOf: ["shop:read"] });
  // An expired key, and a last use for another, written directly: the API refuses a past expiry.
  await make("long-expired");
  const db = t.server.ctx.db;
  await sql`update api_keys set expires_on = now() - interval '1 day' where id = ${ids["long-expired"]}`.execute(db);
  await sql`update api_keys set last_used_on = now() - interval '3 days' where id = ${ids["far-future"]}`.execute(db);
  await sql`update api_keys set last_used_on = now() where id = ${ids["orders-worker"]}`.execute(db);
});
afterAll(() => t.stop());

describe.each(PROTOCOLS)("key listing over %s", (protocol) => {
  const admin = () => clientsFor(t.baseUrl, protocol, t.adminToken).admin;
  const names = async (req: Parameters<ReturnType<typeof admin>["adminGetApiKeys"]>[0]) =>
    (await admin().adminGetApiKeys(req)).apiKeys.map((k) => k.name);

  it("filters by bare word, field and status, with the total of all pages", async () => {
    expect(await names({ filter: "WORKER" })).toEqual(["orders-worker", "Billing Worker"]);
    expect(await names({ filter: 'name:"billing worker"' })).toEqual(["Billing Worker"]);
    // LIKE wildcards in the filter are literal.
    expect(await names({ filter: "50%_" })).toEqual(["50%_literal"]);
    expect(await names({ filter: "%" })).toEqual(["50%_literal"]);
    expect(await names({ filter: "status:disabled" })).toEqual(["switched-off"]);
    expect(await names({ filter: "status:expired" })).toEqual(["long-expired"]);
    expect(await names({ filter: "status:expiring-soon" })).toEqual(["soon-gone"]);
    expect(await names({ filter: "status:enabled worker" })).toEqual(["orders-worker", "Billing Worker"]);
    expect(await names({ filter: "policy:shop-writer" })).toEqual(["Billing Worker"]);
    expect(await names({ filter: `policy:${writerPolicy}` })).toEqual(["Billing Worker"]);
    expect(await names({ filter: "consumer:team-alpha" })).toEqual(["Billing Worker"]);
    // Every key but orders-worker (verified) and far-future (last use written); the bootstrap
    // key's last use is recorded in the background, so it may or may not be among them yet.
    const neverUsed = await admin().adminGetApiKeys({ filter: "status:never_used", pageSize: 2 });
    expect(neverUsed.apiKeys).toHaveLength(2);
    const neverUsedNames = (await names({ filter: "status:never_used", pageSize: 100 })).filter((n) => n !== "bootstrap");
    expect(neverUsedNames).toEqual(["Billing Worker", "soon-gone", "switched-off", "50%_literal", "long-expired"]);
    expect(neverUsed.totalSize - neverUsedNames.length).toBeLessThanOrEqual(1);
    const start = (await admin().adminGetApiKey({ id: ids["soon-gone"]! })).apiKey!.start;
    expect(await names({ filter: `start:${start}` })).toContain("soon-gone");
  });

  it("sorts by name, last use and expiry in both directions, missing values last", async () => {
    expect((await names({ filter: "worker", orderBy: "name desc" }))[0]).toBe("orders-worker");
    const byUse = await names({ orderBy: "last_used_on desc", filter: "-" });
    expect(byUse.slice(0, 2)).toEqual(["orders-worker", "far-future"]);
    const byUseAsc = await names({ orderBy: "last_used_on", filter: "-" });
    expect(byUseAsc.slice(0, 2)).toEqual(["far-future", "orders-worker"]);
    const byExpiry = await names({ orderBy: "expires_on" });
    expect(byExpiry.slice(0, 3)).toEqual(["long-expired", "soon-gone", "far-future"]);
    const byExpiryDesc = await names({ orderBy: "expires_on desc" });
    expect(byExpiryDesc.slice(0, 3)).toEqual(["far-future", "soon-gone", "long-expired"]);
  });

  it.each(["created_on", "name", "name desc", "last_used_on", "last_used_on desc", "expires_on desc"])(
    "pages through every key exactly once ordered by %s",
    async (orderBy) => {
      const whole = await names({ orderBy });
      const paged: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await admin().adminGetApiKeys({ orderBy, pageSize: 2, pageToken });
        expect(page.totalSize).toBe(whole.length);
        paged.push(...page.apiKeys.map((k) => k.name));
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken !== "" && pages < 20);
      // The admin key making these calls has its last use recorded as they happen, so its own
      // place in a last_used_on order moves while paging; every other key's must not.
      const others = (list: string[]) => list.filter((n) => n !== "bootstrap");
      expect(others(paged)).toEqual(others(whole));
    },
  );

  it("names each key's policy only, unless the full view is asked for", async () => {
    const basic = (await admin().adminGetApiKeys({ filter: "Billing" })).apiKeys[0]!;
    expect(basic.policy?.id).toBe(writerPolicy);
    expect(basic.policy?.name).toBe("shop-writer");
    expect(basic.policy?.permissions).toEqual([]);
    const full = (await admin().adminGetApiKeys({ filter: "Billing", view: ApiKeyView.FULL })).apiKeys[0]!;
    expect(full.policy?.permissions).toEqual(["shop:read", "shop:write"]);
  });

  it("refuses forged or replayed page tokens and bad filters with invalid_argument", async () => {
    const first = await admin().adminGetApiKeys({ pageSize: 1, orderBy: "last_used_on" });
    expect(first.nextPageToken).not.toBe("");
    const forged = (parts: unknown) => Buffer.from(JSON.stringify(parts)).toString("base64url");
    const [digest] = JSON.parse(Buffer.from(first.nextPageToken, "base64url").toString()) as [string];
    const bad = [
      "not a token",
      "AAAA",
      Buffer.from("[1,2").toString("base64url"),
      forged([digest, "99999999999999999999", ids["soon-gone"]]),
      forged([digest, "-999999999999999999", ids["soon-gone"]]),
      forged([digest, { $gt: 1 }, ids["soon-gone"]]),
      forged([digest, "1", "not-a-uuid"]),
      forged(["wrong-digest", "1", ids["soon-gone"]]),
      "A".repeat(5000),
    ];
    for (const pageToken of bad) {
      expect((await rejection(admin().adminGetApiKeys({ pageSize: 1, orderBy: "last_used_on", pageToken }))).code).toBe(Code.InvalidArgument);
    }
    // A token only continues the listing it came from.
    const other = await rejection(admin().adminGetApiKeys({ pageSize: 1, orderBy: "name", pageToken: first.nextPageToken }));
    expect(other.code).toBe(Code.InvalidArgument);
    for (const req of [{ filter: "colour:red" }, { filter: "status:sleepy" }, { filter: 'name:"open' }, { orderBy: "start" }, { orderBy: "name up" }, { filter: "x ".repeat(30) }]) {
      expect((await rejection(admin().adminGetApiKeys(req))).code).toBe(Code.InvalidArgument);
    }
  });
});

describe.each(PROTOCOLS)("policy and consumer listing over %s", (protocol) => {
  const admin = () => clientsFor(t.baseUrl, protocol, t.adminToken).admin;

  it("lists every policy by default, and filters, sorts and pages on request", async () => {
    const all = await admin().adminGetApiKeyPolicies({});
    expect(all.policies.map((p) => p.name)).toEqual(["apikeys-admin", "shop-reader", "shop-writer"]);
    expect(all.totalSize).toBe(3);
    const adminPolicy = all.policies.find((p) => p.name === "apikeys-admin")!.id;
    expect([all.apiKeyCounts[adminPolicy], all.apiKeyCounts[writerPolicy]]).toEqual([1, 1]);
    expect(all.nextPageToken).toBe("");
    const granting = await admin().adminGetApiKeyPolicies({ filter: "permission:shop:write" });
    expect(granting.policies.map((p) => p.name)).toEqual(["shop-writer"]);
    expect((await admin().adminGetApiKeyPolicies({ filter: "SHOP", orderBy: "created_on desc" })).policies.map((p) => p.name)).toEqual([
      "shop-writer",
      "shop-reader",
    ]);
    const first = await admin().adminGetApiKeyPolicies({ pageSize: 2 });
    const second = await admin().adminGetApiKeyPolicies({ pageSize: 2, pageToken: first.nextPageToken });
    expect([...first.policies, ...second.policies].map((p) => p.name)).toEqual(all.policies.map((p) => p.name));
    expect(second.nextPageToken).toBe("");
    expect((await rejection(admin().adminGetApiKeyPolicies({ pageSize: 2, pageToken: "Zm9v" }))).code).toBe(Code.InvalidArgument);
  });

  it("filters consumers by username and granted policy, sorted as asked", async () => {
    await admin().adminCreateConsumer({ username: `beta-${protocol}` }).catch(() => undefined);
    const byPolicy = await admin().adminGetConsumers({ filter: "policy:shop-writer" });
    expect(byPolicy.consumers.map((c) => c.username)).toEqual(["team-alpha"]);
    expect(byPolicy.totalSize).toBe(1);
    expect(Object.values(byPolicy.apiKeyCounts)).toEqual([1]);
    const newest = await admin().adminGetConsumers({ orderBy: "created_on desc", pageSize: 1 });
    expect(newest.consumers[0]!.username).toMatch(/^beta-/);
    const next = await admin().adminGetConsumers({ orderBy: "created_on desc", pageSize: 1, pageToken: newest.nextPageToken });
    expect(next.consumers[0]!.username).not.toBe(newest.consumers[0]!.username);
    expect((await rejection(admin().adminGetConsumers({ filter: "team", pageToken: newest.nextPageToken }))).code).toBe(Code.InvalidArgument);
  });
});

describe.each(PROTOCOLS)("rotation state over %s", (protocol) => {
  it("shows the previous token's start and end during the grace period, and revokes it on request", async () => {
    const { admin, data } = clientsFor(t.baseUrl, protocol, t.adminToken);
    const created = await admin.adminCreateApiKey({ name: `rotated-${protocol}`, policyId: readerPolicy });
    const rotated = await admin.adminRotateApiKey({ id: created.apiKey!.id, gracePeriod: { seconds: 3600n } });
    expect(rotated.apiKey!.previousStart).toBe(created.apiKey!.start);
    const ends = Number(rotated.apiKey!.previousTokenExpiresOn!.seconds) * 1000;
    expect(Math.abs(ends - (Date.now() + 3600_000))).toBeLessThan(60_000);
    expect((await admin.adminGetApiKey({ id: created.apiKey!.id })).apiKey!.previousStart).toBe(created.apiKey!.start);
    expect((await data.verifyToken({ token: created.token })).code).toBe(VerifyCode.VALID);
    const revoked = await admin.adminRevokePreviousToken({ id: created.apiKey!.id });
    expect(revoked.apiKey!.previousStart).toBe("");
    expect(revoked.apiKey!.previousTokenExpiresOn).toBeUndefined();
    expect((await data.verifyToken({ token: created.token })).code).toBe(VerifyCode.NOT_FOUND);
    expect((await data.verifyToken({ token: rotated.token })).code).toBe(VerifyCode.VALID);
    // Without a previous token it changes nothing.
    expect((await admin.adminRevokePreviousToken({ id: created.apiKey!.id })).apiKey!.start).toBe(rotated.apiKey!.start);
    expect((await rejection(admin.adminRevokePreviousToken({ id: "nope" }))).code).toBe(Code.InvalidArgument);
  });
});

describe.each(PROTOCOLS)("audit listing over %s", (protocol) => {
  const admin = () => clientsFor(t.baseUrl, protocol, t.adminToken).admin;

  it("returns one event per call with its outcome, writes apart from reads, names resolved", async () => {
    const name = `audited-${protocol}`;
    const key = await admin().adminCreateApiKey({ name, policyId: readerPolicy });
    for (let i = 0; i < 30; i++) await admin().adminGetApiKey({ id: key.apiKey!.id });
    await admin().adminDeleteApiKey({ id: key.apiKey!.id });
    await rejection(admin().adminDeleteApiKey({ id: key.apiKey!.id }));

    const writes = await admin().adminGetAuditEvents({ kind: AuditCallKind.WRITE, view: AuditEventView.CALLS, pageSize: 3 });
    expect(writes.events.map((e) => [e.rpc.split("/")[1], e.stage, e.code])).toEqual([
      ["AdminDeleteApiKey", AuditStage.FAILURE, "not_found"],
      ["AdminDeleteApiKey", AuditStage.SUCCESS, "ok"],
      ["AdminCreateApiKey", AuditStage.SUCCESS, "ok"],
    ]);
    const [failure] = writes.events;
    expect(failure!.attemptTime).toBeDefined();
    // The deleted key keeps its name in the log; the actor is the bootstrap key.
    expect(writes.names[key.apiKey!.id]).toBe(name);
    expect(writes.names[failure!.actorKeyId]).toBe("bootstrap");

    // By the (deleted) key's name, by method, by outcome.
    const byName = await admin().adminGetAuditEvents({ target: name, view: AuditEventView.CALLS, kind: AuditCallKind.WRITE });
    expect(byName.events).toHaveLength(3);
    const reads = await admin().adminGetAuditEvents({ target: name, kind: AuditCallKind.READ, view: AuditEventView.CALLS });
    expect(reads.events).toHaveLength(30);
    expect(reads.events.every((e) => e.rpc.endsWith("/AdminGetApiKey"))).toBe(true);
    const creates = await admin().adminGetAuditEvents({ target: name, method: "AdminCreateApiKey" });
    // Per stage, a create's attempt cannot name the key it has yet to create: only its success does.
    expect(creates.events.map((e) => e.stage)).toEqual([AuditStage.SUCCESS]);
    const failed = await admin().adminGetAuditEvents({ target: key.apiKey!.id, outcome: "failed", view: AuditEventView.CALLS });
    expect(failed.events.map((e) => e.code)).toEqual(["not_found"]);
    const byActor = await admin().adminGetAuditEvents({ actor: "bootstrap", pageSize: 1, kind: AuditCallKind.WRITE, view: AuditEventView.CALLS });
    expect(byActor.events[0]!.id).toBe(failure!.id);
    expect((await admin().adminGetAuditEvents({ target: "no-such-name" })).events).toEqual([]);
    // A write method asked for among reads matches nothing.
    expect((await admin().adminGetAuditEvents({ method: "AdminCreateApiKey", kind: AuditCallKind.READ })).events).toEqual([]);
  });

  it("refuses unknown methods, outcomes, forged tokens and out-of-range times with invalid_argument", async () => {
    const bad = [
      { method: "DropTables" },
      { outcome: "meh" },
      { pageToken: Buffer.from("99999999999999999999").toString("base64url") },
      { pageToken: Buffer.from("9999999999999999999").toString("base64url") },
      { startTime: { seconds: -70000000000n, nanos: 0 } },
      { endTime: { seconds: 9_000_000_000_000n, nanos: 0 } },
      { target: "x".repeat(500) },
    ];
    for (const req of bad) expect((await rejection(admin().adminGetAuditEvents(req))).code).toBe(Code.InvalidArgument);
  });
});

describe("list routes over REST", () => {
  const rest = (path: string, init: RequestInit = {}) =>
    fetch(`${t.baseUrl}${path}`, { ...init, headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/json" } });

  it("takes filter, order_by and view as query parameters", async () => {
    const res = await rest(`/api/v1/api_keys?filter=${encodeURIComponent("status:enabled worker")}&order_by=name&page_size=1`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { apiKeys: Array<{ name: string; policy: { name: string; permissions?: string[] } }>; totalSize: number; nextPageToken: string };
    expect(body.apiKeys.map((k) => k.name)).toEqual(["Billing Worker"]);
    expect(body.apiKeys[0]!.policy.permissions ?? []).toEqual([]);
    expect(body.totalSize).toBe(2);
    const next = await rest(`/api/v1/api_keys?filter=${encodeURIComponent("status:enabled worker")}&order_by=name&page_size=1&page_token=${body.nextPageToken}`);
    expect(((await next.json()) as { apiKeys: Array<{ name: string }> }).apiKeys.map((k) => k.name)).toEqual(["orders-worker"]);
    const forged = await rest(`/api/v1/api_keys?page_token=${Buffer.from('["x",null,"y"]').toString("base64url")}`);
    expect(forged.status).toBe(400);
    const full = await rest(`/api/v1/api_keys?filter=Billing&view=API_KEY_VIEW_FULL`);
    expect(((await full.json()) as { apiKeys: Array<{ policy: { permissions: string[] } }> }).apiKeys[0]!.policy.permissions).toEqual([
      "shop:read",
      "shop:write",
    ]);
    const policies = await rest(`/api/v1/api_keys/policies?filter=${encodeURIComponent("permission:shop:write")}`);
    expect(((await policies.json()) as { policies: Array<{ name: string }> }).policies.map((p) => p.name)).toEqual(["shop-writer"]);
    const audit = await rest(`/api/v1/api_keys/audit_events?kind=AUDIT_CALL_KIND_WRITE&view=AUDIT_EVENT_VIEW_CALLS&page_size=1`);
    expect(audit.status).toBe(200);
    expect(((await audit.json()) as { events: unknown[] }).events).toHaveLength(1);
  });

  it("revokes a previous token at its custom-method route", async () => {
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const created = await admin.adminCreateApiKey({ name: "rest-rotated", policyId: readerPolicy });
    await admin.adminRotateApiKey({ id: created.apiKey!.id, gracePeriod: { seconds: 600n } });
    const res = await rest(`/api/v1/api_keys/${created.apiKey!.id}:revokePreviousToken`, { method: "POST", body: "{}" });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { apiKey: { previousStart?: string } }).apiKey.previousStart ?? "").toBe("");
  });
});

describe("at 10,000 keys", () => {
  it("lists a filtered, sorted page with its total in milliseconds", async () => {
    const db = t.server.ctx.db;
    await sql`insert into api_keys (name, policy_id, token_hash, start, last_used_on)
      select 'bulk-' || i, ${readerPolicy}::uuid, sha256(('bulk-token-' || i)::bytea), 'ak_bulk',
             case when i % 3 = 0 then null else now() - i * interval '1 minute' end
      from generate_series(1, 10000) as i`.execute(db);
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    await admin.adminGetApiKeys({ pageSize: 50 });
    for (const req of [
      { pageSize: 50 },
      { pageSize: 50, orderBy: "last_used_on desc" },
      { pageSize: 50, filter: "bulk-9999" },
      { pageSize: 50, filter: "status:never_used", orderBy: "name" },
    ]) {
      const started = performance.now();
      const page = await admin.adminGetApiKeys(req);
      const elapsed = performance.now() - started;
      expect(page.totalSize).toBeGreaterThan(0);
      // Milliseconds on an idle machine; the bound leaves room for a loaded CI host.
      expect(elapsed).toBeLessThan(400);
    }
    const found = await admin.adminGetApiKeys({ filter: "bulk-9999" });
    expect(found.apiKeys.map((k) => k.name)).toEqual(["bulk-9999"]);
    const recent = await admin.adminGetApiKeys({ pageSize: 1, orderBy: "last_used_on desc", filter: "bulk" });
    expect(recent.apiKeys[0]!.name).toBe("bulk-1");
    expect(recent.totalSize).toBe(10000);
  });
});
