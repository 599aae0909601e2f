import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AuditEvent, AuditStage } from "../src/gen/apikeys/v1/audit_pb.js";
import { CredentialType } from "../src/gen/apikeys/v1/resources_pb.js";
import { codeOf, rejection } from "./helpers/errors.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
let bootstrapKeyId: string;
let readerPolicyId: string;
beforeAll(async () => {
  t = await startTestServer({ APIKEYS_SECRET_KEY: "audit-test-server-secret-0123456789abcdef" });
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  bootstrapKeyId = (await data.testApiKey({})).apiKey!.id;
  await data.registerPermissions({ service: "ledger", permissions: [{ name: "read", description: "" }] });
  readerPolicyId = (await admin.adminCreateApiKeyPolicy({ name: "ledger-reader", permissions: ["ledger:read"] })).policy!.id;
});
afterAll(() => t.stop());

const admin = (protocol: "connect" | "grpc" | "grpc-web" = "connect", token = t.adminToken) =>
  clientsFor(t.baseUrl, protocol, token).admin;

/**
 * Every event of every call that has an event naming a target, oldest first,
 * read through the RPC. (A create's attempt cannot name the id it is about to make.)
 */
async function eventsFor(targetId: string): Promise<AuditEvent[]> {
  const naming = (await admin().adminGetAuditEvents({ targetId, pageSize: 1000 })).events;
  const calls = new Set(naming.map((e) => e.callId));
  const recent = (await admin().adminGetAuditEvents({ pageSize: 1000 })).events;
  return recent.filter((e) => calls.has(e.callId)).reverse();
}

function byCall(events: AuditEvent[], rpc: string): AuditEvent[][] {
  const calls = new Map<string, AuditEvent[]>();
  for (const e of events.filter((e) => e.rpc === `apikeys.v1.ApiKeysAdminService/${rpc}`)) {
    calls.set(e.callId, [...(calls.get(e.callId) ?? []), e]);
  }
  return [...calls.values()];
}

describe.each(["connect", "grpc"] as const)("audit events over %s", (protocol) => {
  it("records attempt and success of a change, with actor, targets and request fields", async () => {
    const { apiKey } = await admin(protocol).adminCreateApiKey({ name: `audited-${protocol}`, policyId: readerPolicyId, description: "for audit" });
    const calls = byCall(await eventsFor(apiKey!.id), "AdminCreateApiKey");
    expect(calls).toHaveLength(1);
    const [attempt, success] = calls[0]!;
    expect(attempt!.stage).toBe(AuditStage.ATTEMPT);
    expect(attempt!.code).toBe("");
    expect(success!.stage).toBe(AuditStage.SUCCESS);
    expect(success!.code).toBe("ok");
    for (const e of [attempt!, success!]) expect(e.actorKeyId).toBe(bootstrapKeyId);
    expect(success!.targetIds).toEqual(expect.arrayContaining([apiKey!.id, readerPolicyId]));
    expect(success!.request).toMatchObject({ name: `audited-${protocol}`, policyId: readerPolicyId, description: "for audit" });
    expect(success!.time!.seconds).toBeGreaterThanOrEqual(attempt!.time!.seconds);
  });

  it("writes the success event in the transaction of the change", async () => {
    const { apiKey } = await admin(protocol).adminCreateApiKey({ name: `atomic-${protocol}`, policyId: readerPolicyId });
    const db = t.server.ctx.db;
    const keyTx = await sql<{ xmin: string }>`select xmin::text from api_keys where id = ${apiKey!.id}`.execute(db);
    const eventTx = await sql<{ xmin: string; stage: string }>`
      select xmin::text, stage from audit_events where call_id in
        (select call_id from audit_events where ${apiKey!.id}::uuid = any(target_ids) and rpc like '%AdminCreateApiKey')`.execute(db);
    const success = eventTx.rows.find((r) => r.stage === "success")!;
    const attempt = eventTx.rows.find((r) => r.stage === "attempt")!;
    expect(success.xmin).toBe(keyTx.rows[0]!.xmin);
    // The attempt is committed before the change starts, so a rollback cannot take it away.
    expect(attempt.xmin).not.toBe(keyTx.rows[0]!.xmin);
  });

  it("records attempt and failure of a refused change, and no success", async () => {
    const missingPolicy = crypto.randomUUID();
    expect(await codeOf(admin(protocol).adminCreateApiKey({ name: `nope-${protocol}`, policyId: missingPolicy }))).toBe(Code.NotFound);
    const calls = byCall(await eventsFor(missingPolicy), "AdminCreateApiKey");
    expect(calls).toHaveLength(1);
    expect(calls[0]!.map((e) => e.stage)).toEqual([AuditStage.ATTEMPT, AuditStage.FAILURE]);
    expect(calls[0]![1]!.code).toBe("not_found");
    expect(calls[0]![1]!.message).toContain(missingPolicy);
    expect(calls[0]![1]!.actorKeyId).toBe(bootstrapKeyId);
  });

  it("records calls refused by authentication and by permission", async () => {
    const { apiKey, token } = await admin(protocol).adminCreateApiKey({ name: `weak-${protocol}`, policyId: readerPolicyId });
    const target = crypto.randomUUID();
    expect(await codeOf(admin(protocol, token).adminDeleteApiKey({ id: target }))).toBe(Code.PermissionDenied);
    expect(await codeOf(clientsFor(t.baseUrl, protocol).admin.adminDeleteApiKey({ id: target }))).toBe(Code.Unauthenticated);
    const calls = byCall(await eventsFor(target), "AdminDeleteApiKey");
    expect(calls).toHaveLength(2);
    const outcomes = calls.map((c) => ({ stages: c.map((e) => e.stage), code: c[1]!.code, actor: c[1]!.actorKeyId }));
    expect(outcomes).toEqual(
      expect.arrayContaining([
        { stages: [AuditStage.ATTEMPT, AuditStage.FAILURE], code: "permission_denied", actor: "" },
        { stages: [AuditStage.ATTEMPT, AuditStage.FAILURE], code: "unauthenticated", actor: "" },
      ]),
    );
    expect(apiKey!.id).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("audit log contents and queries", () => {
  it("audits the admin plane only, also when admin and data plane share a port and REST", async () => {
    const { data } = clientsFor(t.baseUrl, "grpc", t.adminToken);
    await data.testApiKey({});
    await data.verifyToken({ token: t.adminToken });
    await fetch(`${t.baseUrl}/api/v1/api_keys/test`, { headers: { authorization: `Bearer ${t.adminToken}` } });
    await admin().adminGetApiKeyPolicies({});
    const rows = await t.server.ctx.db.selectFrom("audit_events").select("rpc").execute();
    expect(rows.some((r) => r.rpc === "apikeys.v1.ApiKeysAdminService/AdminGetApiKeyPolicies")).toBe(true);
    expect(rows.filter((r) => !r.rpc.startsWith("apikeys.v1.ApiKeysAdminService/"))).toEqual([]);
  });

  it("never holds a token or a signing secret", async () => {
    const created = await admin().adminCreateApiKey({
      name: "secretive",
      policyId: readerPolicyId,
      environment: { upstream_password: "hunter2-upstream", api_key: "sk_live_upstream_value" },
    });
    const rotated = await admin().adminRotateApiKey({ id: created.apiKey!.id });
    const signing = await admin().adminCreateApiKey({ name: "signer", policyId: readerPolicyId, credentialType: CredentialType.SIGNING });
    expect(signing.secret).not.toBe("");
    const dump = await sql<{ t: string }>`select string_agg(a::text, ' ') as t from audit_events a`.execute(t.server.ctx.db);
    const text = dump.rows[0]!.t;
    expect(text).not.toContain("hunter2-upstream");
    expect(text).not.toContain("sk_live_upstream_value");
    const recorded = (await eventsFor(created.apiKey!.id)).find((e) => e.rpc.endsWith("AdminCreateApiKey"))!;
    expect(recorded.request?.environment).toEqual({ upstream_password: "[redacted]", api_key: "[redacted]" });
    for (const secret of [created.token, rotated.token, signing.secret, t.adminToken]) {
      expect(text).not.toContain(secret);
      expect(text).not.toContain(secret.slice(7, 30));
    }
    const events = await eventsFor(signing.apiKey!.id);
    expect(events.length).toBeGreaterThanOrEqual(2);
  });

  it("audits consumer and policy changes, and the reads of the audit log itself", async () => {
    const { consumer } = await admin().adminCreateConsumer({ username: "audited-team" });
    await admin().adminGrantConsumerPolicies({ consumer: "audited-team", policyIds: [readerPolicyId] });
    await admin().adminGetConsumer({ consumer: "audited-team" });
    await admin().adminDeleteConsumer({ consumer: consumer!.id });
    const events = await eventsFor(consumer!.id);
    const rpcs = events.filter((e) => e.stage === AuditStage.SUCCESS).map((e) => e.rpc.split("/")[1]);
    expect(rpcs).toEqual(["AdminCreateConsumer", "AdminGrantConsumerPolicies", "AdminGetConsumer", "AdminDeleteConsumer"]);

    const before = (await admin().adminGetAuditEvents({ pageSize: 1 })).events[0]!;
    const after = (await admin().adminGetAuditEvents({ pageSize: 1 })).events[0]!;
    expect(after.rpc).toBe("apikeys.v1.ApiKeysAdminService/AdminGetAuditEvents");
    expect(BigInt(after.id)).toBeGreaterThan(BigInt(before.id));
  });

  it("filters by actor and time range and pages without gaps or repeats", async () => {
    const { apiKey, token } = await admin().adminCreateApiKey({ name: "second-admin", policyId: (await adminPolicyId()) });
    const start = new Date();
    const second = admin("connect", token);
    for (let i = 0; i < 5; i++) await second.adminGetApiKeyPolicies({});
    const end = new Date(Date.now() + 1);

    const byActor = await admin().adminGetAuditEvents({ actorKeyId: apiKey!.id, pageSize: 1000 });
    expect(byActor.events).toHaveLength(10);
    expect(new Set(byActor.events.map((e) => e.actorKeyId))).toEqual(new Set([apiKey!.id]));

    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await admin().adminGetAuditEvents({ actorKeyId: apiKey!.id, pageSize: 3, pageToken });
      expect(page.events.length).toBeLessThanOrEqual(3);
      seen.push(...page.events.map((e) => e.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(byActor.events.map((e) => e.id));
    expect([...seen].sort((a, b) => Number(BigInt(b) - BigInt(a)))).toEqual(seen);

    const inRange = await admin().adminGetAuditEvents({
      startTime: timestampFromDate(start),
      endTime: timestampFromDate(end),
      pageSize: 1000,
    });
    const ours = inRange.events.filter((e) => e.actorKeyId === apiKey!.id);
    expect(ours).toHaveLength(10);
    const empty = await admin().adminGetAuditEvents({ actorKeyId: apiKey!.id, endTime: timestampFromDate(start) });
    expect(empty.events).toHaveLength(0);
  });

  it("refuses bad filters with invalid_argument and callers without apikeys:audit.read", async () => {
    expect(await codeOf(admin().adminGetAuditEvents({ targetId: "not-a-uuid" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().adminGetAuditEvents({ actorKeyId: "x" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().adminGetAuditEvents({ pageToken: "garbage!" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().adminGetAuditEvents({ pageSize: 5000 }))).toBe(Code.InvalidArgument);
    const now = new Date();
    expect(
      await codeOf(admin().adminGetAuditEvents({ startTime: timestampFromDate(now), endTime: timestampFromDate(new Date(now.getTime() - 1000)) })),
    ).toBe(Code.InvalidArgument);

    const readerOfKeys = (
      await admin().adminCreateApiKeyPolicy({ name: "keys-reader-only", permissions: ["apikeys:keys.read"] })
    ).policy!.id;
    const { token } = await admin().adminCreateApiKey({ name: "no-audit", policyId: readerOfKeys });
    const denied = await rejection(admin("connect", token).adminGetAuditEvents({}));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(denied.rawMessage).toContain("apikeys:audit.read");
  });

  it("records a leaked-token report that disabled a key, without the token", async () => {
    const { apiKey, token } = await admin().adminCreateApiKey({ name: "leaky", policyId: readerPolicyId });
    const { data } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const report = await data.reportLeakedToken({ token, sourceUrl: "https://paste.example/abc" });
    expect(report.found).toBe(true);
    const events = (await admin().adminGetAuditEvents({ targetId: apiKey!.id })).events;
    const leak = events.find((e) => e.rpc === "apikeys.v1.ApiKeysService/ReportLeakedToken")!;
    expect(leak.stage).toBe(AuditStage.SUCCESS);
    expect(leak.actorKeyId).toBe(bootstrapKeyId);
    expect(leak.request).toEqual({ sourceUrl: "https://paste.example/abc" });
    const dump = await sql<{ t: string }>`select string_agg(a::text, ' ') as t from audit_events a`.execute(t.server.ctx.db);
    expect(dump.rows[0]!.t).not.toContain(token.slice(3));
  });

  it("is reachable over REST", async () => {
    const { apiKey } = await admin().adminCreateApiKey({ name: "rest-audited", policyId: readerPolicyId });
    const res = await fetch(`${t.baseUrl}/api/v1/api_keys/audit_events?target_id=${apiKey!.id}&page_size=10`, {
      headers: { authorization: `Bearer ${t.adminToken}` },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { events: Array<{ stage: string; targetIds: string[] }> };
    expect(body.events.map((e) => e.stage)).toEqual(["AUDIT_STAGE_SUCCESS"]);
    expect(body.events[0]!.targetIds).toContain(apiKey!.id);
    const unauthenticated = await fetch(`${t.baseUrl}/api/v1/api_keys/audit_events`);
    expect(unauthenticated.status).toBe(401);
  });
});

async function adminPolicyId(): Promise<string> {
  return (await admin().adminGetApiKeyPolicies({})).policies.find((p) => p.name === "apikeys-admin")!.id;
}
