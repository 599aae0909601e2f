import { Code } from "@connectrpc/connect";
import { sql } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { AuditStage } from "../../src/gen/apikeys/v1/audit_pb.js";
import { generateToken } from "../../src/tokens/token.js";
import { codeOf } from "../helpers/errors.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/* The audit log cannot be made to grow without bound, nor to need unbounded memory to read. */

const LIMIT = 10;
const MAX_BYTES = 1024;
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({
    APIKEYS_AUTH_FAILURE_LIMIT: String(LIMIT),
    APIKEYS_AUTH_FAILURE_WINDOW_SECONDS: "600",
    APIKEYS_AUDIT_REQUEST_MAX_BYTES: String(MAX_BYTES),
  });
});
afterAll(() => t.stop());

const rowCount = async () =>
  Number((await sql<{ n: number }>`select count(*)::int as n from audit_events`.execute(t.server.ctx.db)).rows[0]!.n);
const largestRequest = async () =>
  Number((await sql<{ n: number }>`select coalesce(max(octet_length(request::text)), 0)::int as n from audit_events`.execute(t.server.ctx.db)).rows[0]!.n);

it("stores a large request truncated to the configured size, marked as such", async () => {
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const description = "é".repeat(200_000);
  // Refused (too long), and recorded either way: attempt and failure.
  expect(await codeOf(admin.adminCreateApiKeyPolicy({ name: "huge", description, permissions: [] }))).toBe(Code.InvalidArgument);
  // The stored JSON text may exceed the cut only by the marker's few fields and JSON escaping.
  expect(await largestRequest()).toBeLessThan(MAX_BYTES + 200);
  const events = (await admin.adminGetAuditEvents({ pageSize: 10 })).events.filter((e) => e.request?.truncated === true);
  expect(events.map((e) => e.stage).sort()).toEqual([AuditStage.ATTEMPT, AuditStage.FAILURE]);
  const request = events[0]!.request!;
  expect(request.originalBytes).toBeGreaterThan(400_000);
  expect(String(request.prefix)).toMatch(/^\{"name":"huge","description":"éé/);
  expect(Buffer.byteLength(String(request.prefix))).toBeLessThanOrEqual(MAX_BYTES);
});

it("reads rows stored whole before truncation back truncated, without failing", async () => {
  const big = JSON.stringify({ name: "legacy", description: "x".repeat(3_000_000) });
  await sql`insert into audit_events (call_id, rpc, stage, actor_key_id, target_ids, request, code, message)
    values (gen_random_uuid(), 'apikeys.v1.ApiKeysAdminService/AdminCreateApiKeyPolicy', 'attempt', null, '{}', ${big}::jsonb, '', ${"m".repeat(100_000)})`.execute(
    t.server.ctx.db,
  );
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const legacy = (await admin.adminGetAuditEvents({ pageSize: 1000 })).events.find((e) => String(e.request?.prefix ?? "").includes('"legacy"'));
  expect(legacy?.request?.truncated).toBe(true);
  expect(legacy?.request?.originalBytes).toBeGreaterThan(3_000_000);
  expect(String(legacy!.request!.prefix).length).toBe(MAX_BYTES);
  expect(legacy!.message.length).toBeLessThanOrEqual(2_048);
});

it("writes no rows for unauthenticated admin calls beyond the failure limit", async () => {
  const before = await rowCount();
  const body = { name: "flood", description: "f".repeat(50_000), permissions: [] };
  const codes: Array<Code | "ok"> = [];
  for (let i = 0; i < LIMIT * 3; i++) {
    const token = i % 2 === 0 ? undefined : generateToken("ak");
    codes.push(await codeOf(clientsFor(t.baseUrl, i % 3 === 0 ? "grpc" : "connect", token).admin.adminCreateApiKeyPolicy(body)));
  }
  expect(codes.slice(0, LIMIT)).toEqual(Array(LIMIT).fill(Code.Unauthenticated));
  expect(codes.slice(LIMIT)).toEqual(Array(LIMIT * 2).fill(Code.ResourceExhausted));
  // Two events (attempt and failure) per refused call up to the limit, none after it.
  expect((await rowCount()) - before).toBe(LIMIT * 2);
  // Over REST alike.
  const rest = await fetch(`${t.baseUrl}/api/v1/api_keys/policies`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(rest.status).toBe(429);
  await rest.arrayBuffer();
  expect((await rowCount()) - before).toBe(LIMIT * 2);
});
