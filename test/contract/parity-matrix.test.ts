import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AdminCreateApiKeyPolicyRequestSchema,
  AdminCreateApiKeyRequestSchema,
  AdminGetApiKeyPoliciesRequestSchema,
  AdminGetApiKeyRequestSchema,
  AdminGetApiKeyUsageRequestSchema,
  AdminUpdateApiKeyRequestSchema,
  ApiKeysAdminService,
  type UsageGranularity,
} from "../../src/gen/apikeys/v1/admin_pb.js";
import { ApiKeysService, VerifyCode, VerifyTokenRequestSchema } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import type { CredentialType } from "../../src/gen/apikeys/v1/resources_pb.js";
import { generateToken } from "../../src/tokens/token.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";
import { canExpress, send, type WireProtocol, type WireRequest, WIRE_PROTOCOLS } from "./wire.js";

/*
 * One contract on every protocol: each case below runs on every protocol that can
 * express it (Connect JSON and binary, gRPC, gRPC-Web, REST) and must end with
 * the same code and google.rpc.ErrorInfo reason, and leave nothing behind: no
 * row written or changed, no audit success, and, when the codec refuses it, no
 * rate-limit budget spent and no last-use recorded for the keys involved.
 *
 * The first five cases are the fail-open defects of issue 12: before strict JSON,
 * Connect JSON, gRPC-Web and gRPC +json dropped the unknown name and went ahead.
 */

const FAILURE_LIMIT = 3;
const READ_MAX_BYTES = 1024 * 1024;
const DAY = { seconds: 86_400n };

let t: TestServer;
let admin: ReturnType<typeof clientsFor>["admin"];
let adminPolicyId: string;
let verifyPolicyId: string;

beforeAll(async () => {
  t = await startTestServer({ APIKEYS_AUTH_FAILURE_LIMIT: String(FAILURE_LIMIT) });
  admin = clientsFor(t.baseUrl, "connect", t.adminToken).admin;
  const policies = (await admin.adminGetApiKeyPolicies({})).policies;
  adminPolicyId = policies.find((p) => p.name === "apikeys-admin")!.id;
  verifyPolicyId = (await admin.adminCreateApiKeyPolicy({ name: "matrix-verify", permissions: ["apikeys:verify"] })).policy!.id;
  await admin.adminCreateApiKeyPolicy({ name: "matrix-taken" });
});
afterAll(() => t.stop());

/** Keys made for one run of a case: each has a budget of one request per day, so any spend shows. */
interface Fixture {
  caller: { id: string; token: string };
  target: { id: string; token: string };
  unique: string;
}

let serial = 0;
async function fixture(): Promise<Fixture> {
  const unique = `matrix-${++serial}`;
  const make = async (name: string, policyId: string) => {
    const created = await admin.adminCreateApiKey({ name, policyId, rateLimit: { requests: 1, period: DAY } });
    return { id: created.apiKey!.id, token: created.token };
  };
  return { unique, caller: await make(`${unique}-caller`, adminPolicyId), target: await make(`${unique}-target`, verifyPolicyId) };
}

type Caller = "fresh" | "admin" | "none" | "unknown" | "verify-only";
interface Case {
  name: string;
  code: Code;
  reason: string;
  /** "codec": refused while decoding, before auth; "service": after auth, which spends budget. */
  refusedBy: "codec" | "service";
  caller: Caller;
  /** Failed authentications to make from the same address first. */
  failuresFirst?: number;
  request(f: Fixture): Omit<WireRequest, "authorization">;
  /** ErrorInfo metadata the error must carry. */
  metadata?: (f: Fixture) => Record<string, string>;
}

const bin = <D extends DescMessage>(schema: D, init: MessageInitShape<D>) => toBinary(schema, create(schema, init));
const createKey = ApiKeysAdminService.method.adminCreateApiKey;
const updateKey = ApiKeysAdminService.method.adminUpdateApiKey;
const createPolicy = ApiKeysAdminService.method.adminCreateApiKeyPolicy;
const listPolicies = ApiKeysAdminService.method.adminGetApiKeyPolicies;
const listPoliciesRequest = () => ({
  method: listPolicies,
  json: "{}",
  binary: bin(AdminGetApiKeyPoliciesRequestSchema, {}),
  rest: { httpMethod: "GET", path: "/api/v1/api_keys/policies" },
});
const big = "x".repeat(READ_MAX_BYTES + 1);

const CASES: Case[] = [
  {
    name: "VerifyToken with a misspelled all_of (`allof`)",
    code: Code.InvalidArgument,
    reason: "UNKNOWN_FIELD",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => {
      const body = JSON.stringify({ token: f.target.token, allof: ["svc:write"] });
      return { method: ApiKeysService.method.verifyToken, json: body, rest: { httpMethod: "POST", path: "/api/v1/api_keys/verify", body } };
    },
    metadata: () => ({ field: "allof" }),
  },
  {
    name: "AdminCreateApiKey with `expiresAt` for expires_on",
    code: Code.InvalidArgument,
    reason: "UNKNOWN_FIELD",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => {
      const body = JSON.stringify({ name: f.unique, policyId: verifyPolicyId, expiresAt: "2030-01-01T00:00:00Z" });
      return { method: createKey, json: body, rest: { httpMethod: "POST", path: "/api/v1/api_keys", body } };
    },
    metadata: () => ({ field: "expiresAt" }),
  },
  {
    name: "AdminUpdateApiKey with `enable` for enabled",
    code: Code.InvalidArgument,
    reason: "UNKNOWN_FIELD",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => {
      const fields = { enable: false, description: "compromised" };
      return {
        method: updateKey,
        json: JSON.stringify({ id: f.target.id, ...fields }),
        rest: { httpMethod: "PATCH", path: `/api/v1/api_keys/${f.target.id}`, body: JSON.stringify(fields) },
      };
    },
    metadata: () => ({ field: "enable" }),
  },
  {
    name: "AdminCreateApiKey with credentialType BOGUS",
    code: Code.InvalidArgument,
    reason: "UNKNOWN_ENUM_VALUE",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => {
      const body = JSON.stringify({ name: f.unique, policyId: verifyPolicyId, credentialType: "BOGUS" });
      return { method: createKey, json: body, rest: { httpMethod: "POST", path: "/api/v1/api_keys", body } };
    },
    metadata: () => ({ enum: "apikeys.v1.CredentialType", value: "BOGUS" }),
  },
  {
    name: "AdminUpdateApiKey with `updateMsk`",
    code: Code.InvalidArgument,
    reason: "UNKNOWN_FIELD",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => {
      const fields = { updateMsk: "description", description: "only this", enabled: false };
      return {
        method: updateKey,
        json: JSON.stringify({ id: f.target.id, ...fields }),
        rest: { httpMethod: "PATCH", path: `/api/v1/api_keys/${f.target.id}`, body: JSON.stringify(fields) },
      };
    },
    metadata: () => ({ field: "updateMsk" }),
  },
  {
    name: "unknown enum number (binary)",
    code: Code.InvalidArgument,
    reason: "UNKNOWN_ENUM_VALUE",
    refusedBy: "service",
    caller: "fresh",
    request: (f) => ({ method: createKey, binary: bin(AdminCreateApiKeyRequestSchema, { name: f.unique, policyId: verifyPolicyId, credentialType: 99 as CredentialType }) }),
    metadata: () => ({ enum: "apikeys.v1.CredentialType", value: "99" }),
  },
  {
    name: "misspelled update-mask path",
    code: Code.InvalidArgument,
    reason: "INVALID_UPDATE_MASK",
    refusedBy: "service",
    caller: "fresh",
    request: (f) => ({
      method: updateKey,
      json: JSON.stringify({ id: f.target.id, updateMask: "enabld", enabled: false }),
      binary: bin(AdminUpdateApiKeyRequestSchema, { id: f.target.id, updateMask: { paths: ["enabld"] }, enabled: false }),
      rest: { httpMethod: "PATCH", path: `/api/v1/api_keys/${f.target.id}`, body: JSON.stringify({ updateMask: "enabld", enabled: false }) },
    }),
    metadata: () => ({ field: "update_mask", paths: "enabld" }),
  },
  {
    name: "wrong JSON type",
    code: Code.InvalidArgument,
    reason: "INVALID_FIELD",
    refusedBy: "codec",
    caller: "fresh",
    request: () => {
      const body = JSON.stringify({ name: 12, policyId: verifyPolicyId });
      return { method: createKey, json: body, rest: { httpMethod: "POST", path: "/api/v1/api_keys", body } };
    },
    metadata: () => ({ field: "name" }),
  },
  {
    // Issue 11: REST accepted duplicate keys (the last won) while Connect refused them.
    name: "duplicate JSON key",
    code: Code.InvalidArgument,
    reason: "MALFORMED_REQUEST",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => {
      const body = `{"name":"${f.unique}","policyId":"${verifyPolicyId}","name":"${f.unique}-2"}`;
      return { method: createKey, json: body, rest: { httpMethod: "POST", path: "/api/v1/api_keys", body } };
    },
  },
  {
    // Issue 11: Connect JSON stored invalid UTF-8 as U+FFFD while REST refused it.
    name: "text that is not UTF-8",
    code: Code.InvalidArgument,
    reason: "MALFORMED_REQUEST",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => {
      const body = Buffer.concat([Buffer.from(`{"policyId":"${verifyPolicyId}","name":"${f.unique}`), Buffer.of(0xff), Buffer.from('"}')]);
      // Field 1 (name), length 1, the byte 0xff.
      const binary = Buffer.concat([Buffer.of(0x0a, 0x01, 0xff), Buffer.from(bin(AdminCreateApiKeyRequestSchema, { policyId: verifyPolicyId }))]);
      return { method: createKey, json: body, binary, rest: { httpMethod: "POST", path: "/api/v1/api_keys", body } };
    },
  },
  {
    name: "malformed protobuf binary",
    code: Code.InvalidArgument,
    reason: "MALFORMED_REQUEST",
    refusedBy: "codec",
    caller: "fresh",
    request: () => ({ method: createKey, binary: Uint8Array.of(0x0a, 0x05, 0x61) }),
  },
  {
    name: "oversized request",
    code: Code.ResourceExhausted,
    reason: "REQUEST_TOO_LARGE",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => {
      const body = JSON.stringify({ name: f.unique, policyId: verifyPolicyId, description: big });
      return {
        method: createKey,
        json: body,
        binary: bin(AdminCreateApiKeyRequestSchema, { name: f.unique, policyId: verifyPolicyId, description: big }),
        rest: { httpMethod: "POST", path: "/api/v1/api_keys", body },
      };
    },
  },
  {
    name: "VerifyToken with a negative cost",
    code: Code.InvalidArgument,
    reason: "INVALID_FIELD",
    refusedBy: "service",
    caller: "fresh",
    request: (f) => {
      const body = JSON.stringify({ token: f.target.token, cost: "-1" });
      return {
        method: ApiKeysService.method.verifyToken,
        json: body,
        binary: bin(VerifyTokenRequestSchema, { token: f.target.token, cost: -1n }),
        rest: { httpMethod: "POST", path: "/api/v1/api_keys/verify", body },
      };
    },
    metadata: () => ({ field: "cost" }),
  },
  {
    name: "AdminCreateApiKey with a refill of both interval and period",
    code: Code.InvalidArgument,
    reason: "INVALID_FIELD",
    refusedBy: "service",
    caller: "fresh",
    request: (f) => {
      const refill = { amount: "5", interval: "REFILL_INTERVAL_DAILY", period: "3600s" };
      const body = JSON.stringify({ name: f.unique, policyId: verifyPolicyId, refill });
      return {
        method: createKey,
        json: body,
        binary: bin(AdminCreateApiKeyRequestSchema, { name: f.unique, policyId: verifyPolicyId, refill: { amount: 5n, interval: 1, period: { seconds: 3600n } } }),
        rest: { httpMethod: "POST", path: "/api/v1/api_keys", body },
      };
    },
    metadata: () => ({ field: "refill" }),
  },
  {
    name: "AdminUpdateApiKey with negative remaining",
    code: Code.InvalidArgument,
    reason: "INVALID_FIELD",
    refusedBy: "service",
    caller: "fresh",
    request: (f) => {
      const fields = { updateMask: "remaining", remaining: "-5" };
      return {
        method: updateKey,
        json: JSON.stringify({ id: f.target.id, ...fields }),
        binary: bin(AdminUpdateApiKeyRequestSchema, { id: f.target.id, updateMask: { paths: ["remaining"] }, remaining: -5n }),
        rest: { httpMethod: "PATCH", path: `/api/v1/api_keys/${f.target.id}`, body: JSON.stringify(fields) },
      };
    },
    metadata: () => ({ field: "remaining" }),
  },
  {
    name: "AdminGetApiKeyUsage with start_time after end_time",
    code: Code.InvalidArgument,
    reason: "INVALID_FIELD",
    refusedBy: "service",
    caller: "fresh",
    request: (f) => ({
      method: ApiKeysAdminService.method.adminGetApiKeyUsage,
      json: JSON.stringify({ id: f.target.id, startTime: "2026-06-02T00:00:00Z", endTime: "2026-06-01T00:00:00Z" }),
      binary: bin(AdminGetApiKeyUsageRequestSchema, { id: f.target.id, startTime: { seconds: 1_780_358_400n }, endTime: { seconds: 1_780_272_000n } }),
      rest: { httpMethod: "GET", path: `/api/v1/api_keys/${f.target.id}/usage?startTime=2026-06-02T00:00:00Z&endTime=2026-06-01T00:00:00Z` },
    }),
    metadata: () => ({ field: "start_time" }),
  },
  {
    name: "AdminGetApiKeyUsage with granularity BOGUS",
    code: Code.InvalidArgument,
    reason: "UNKNOWN_ENUM_VALUE",
    refusedBy: "codec",
    caller: "fresh",
    request: (f) => ({
      method: ApiKeysAdminService.method.adminGetApiKeyUsage,
      json: JSON.stringify({ id: f.target.id, granularity: "BOGUS" }),
      rest: { httpMethod: "GET", path: `/api/v1/api_keys/${f.target.id}/usage?granularity=BOGUS` },
    }),
    metadata: () => ({ enum: "apikeys.v1.UsageGranularity", value: "BOGUS" }),
  },
  {
    name: "AdminGetApiKeyUsage with an unknown granularity number (binary)",
    code: Code.InvalidArgument,
    reason: "UNKNOWN_ENUM_VALUE",
    refusedBy: "service",
    caller: "fresh",
    request: (f) => ({ method: ApiKeysAdminService.method.adminGetApiKeyUsage, binary: bin(AdminGetApiKeyUsageRequestSchema, { id: f.target.id, granularity: 99 as UsageGranularity }) }),
    metadata: () => ({ enum: "apikeys.v1.UsageGranularity", value: "99" }),
  },
  { name: "no API key", code: Code.Unauthenticated, reason: "API_KEY_MISSING", refusedBy: "service", caller: "none", request: listPoliciesRequest },
  { name: "unknown API key", code: Code.Unauthenticated, reason: "API_KEY_INVALID", refusedBy: "service", caller: "unknown", request: listPoliciesRequest },
  {
    name: "key lacking the permission",
    code: Code.PermissionDenied,
    reason: "PERMISSION_MISSING",
    refusedBy: "service",
    caller: "verify-only",
    request: listPoliciesRequest,
    metadata: () => ({ permissions: "apikeys:policies.read" }),
  },
  {
    name: "unknown key id",
    code: Code.NotFound,
    reason: "NOT_FOUND",
    refusedBy: "service",
    caller: "admin",
    request: () => {
      const id = crypto.randomUUID();
      return {
        method: ApiKeysAdminService.method.adminGetApiKey,
        json: JSON.stringify({ id }),
        binary: bin(AdminGetApiKeyRequestSchema, { id }),
        rest: { httpMethod: "GET", path: `/api/v1/api_keys/${id}` },
      };
    },
  },
  {
    name: "taken policy name",
    code: Code.AlreadyExists,
    reason: "ALREADY_EXISTS",
    refusedBy: "service",
    caller: "admin",
    request: () => ({
      method: createPolicy,
      json: JSON.stringify({ name: "matrix-taken" }),
      binary: bin(AdminCreateApiKeyPolicyRequestSchema, { name: "matrix-taken" }),
      rest: { httpMethod: "POST", path: "/api/v1/api_keys/policies", body: JSON.stringify({ name: "matrix-taken" }) },
    }),
  },
  {
    name: "bad policy name",
    code: Code.InvalidArgument,
    reason: "INVALID_FIELD",
    refusedBy: "service",
    caller: "admin",
    request: () => ({
      method: createPolicy,
      json: JSON.stringify({ name: " padded " }),
      binary: bin(AdminCreateApiKeyPolicyRequestSchema, { name: " padded " }),
      rest: { httpMethod: "POST", path: "/api/v1/api_keys/policies", body: JSON.stringify({ name: " padded " }) },
    }),
    metadata: () => ({ field: "name" }),
  },
  {
    name: "too many failed authentications",
    code: Code.ResourceExhausted,
    reason: "AUTH_THROTTLED",
    refusedBy: "service",
    caller: "unknown",
    failuresFirst: FAILURE_LIMIT,
    request: listPoliciesRequest,
  },
];

/** What must not change: rows of keys and policies, and audit successes. */
async function footprint() {
  const { rows } = await sql<Record<string, string>>`
    select (select count(*) from api_keys)::text as keys,
           (select max(updated_on) from api_keys)::text as keys_updated,
           (select count(*) from policies)::text as policies,
           (select max(updated_on) from policies)::text as policies_updated,
           (select count(*) from audit_events where stage = 'success')::text as audit_successes
  `.execute(t.server.ctx.db);
  return rows[0];
}

/** Whether a key still has its one request of the day and has no recorded use. */
async function untouched(key: { id: string; token: string }, probeAddress: string): Promise<{ lastUsed: unknown; budgetLeft: boolean }> {
  await t.server.ctx.verifier.flushLastUsed();
  const { rows } = await sql<{ last_used_on: unknown }>`select last_used_on from api_keys where id = ${key.id}`.execute(t.server.ctx.db);
  // The probe spends the budget, if any is left.
  const probe = await send("connect-binary", t.server.port, probeAddress, {
    method: ApiKeysService.method.testApiKey,
    binary: new Uint8Array(),
    authorization: `Bearer ${key.token}`,
  });
  return { lastUsed: rows[0]!.last_used_on, budgetLeft: probe.code === 0 };
}

function authorization(caller: Caller, f: Fixture, verifyOnlyToken: string): string | undefined {
  switch (caller) {
    case "fresh":
      return `Bearer ${f.caller.token}`;
    case "admin":
      return `Bearer ${t.adminToken}`;
    case "none":
      return undefined;
    case "unknown":
      return `Bearer ${generateToken("ak")}`;
    case "verify-only":
      return `Bearer ${verifyOnlyToken}`;
  }
}

describe.each(CASES.map((c, i) => [c.name, c, i] as const))("%s", (_, c, caseIndex) => {
  const protocols = WIRE_PROTOCOLS.filter((p) => canExpress(p, c.request({ caller: { id: "", token: "" }, target: { id: "", token: "" }, unique: "" })));

  it.each(protocols.map((p, i) => [p, i] as const))("over %s", async (protocol: WireProtocol, protocolIndex) => {
    const f = await fixture();
    // Every run has a peer address of its own, so the failure throttle of one never meets another.
    const address = `127.0.${caseIndex + 1}.${protocolIndex + 1}`;
    const request: WireRequest = { ...c.request(f), authorization: authorization(c.caller, f, f.target.token) };
    for (let i = 0; i < (c.failuresFirst ?? 0); i++) {
      expect((await send(protocol, t.server.port, address, { ...request, authorization: `Bearer ${generateToken("ak")}` })).code).toBe(Code.Unauthenticated);
    }
    const before = await footprint();

    const answer = await send(protocol, t.server.port, address, request);

    expect({ code: answer.code, reason: answer.errorInfo?.reason, domain: answer.errorInfo?.domain }).toEqual({ code: c.code, reason: c.reason, domain: "apikeys" });
    expect(answer.detailTypes[0]).toBe("google.rpc.ErrorInfo");
    if (c.code === Code.InvalidArgument) expect(answer.detailTypes).toContain("google.rpc.BadRequest");
    if (c.reason === "AUTH_THROTTLED") expect(answer.retryDelayMs).toBeGreaterThan(0);
    if (c.metadata) expect(answer.errorInfo?.metadata).toMatchObject(c.metadata(f));
    expect(await footprint()).toEqual(before);
    if (c.refusedBy === "codec") {
      const probe = `127.0.${caseIndex + 1}.${100 + protocolIndex}`;
      expect(await untouched(f.caller, probe)).toEqual({ lastUsed: null, budgetLeft: true });
      expect(await untouched(f.target, probe)).toEqual({ lastUsed: null, budgetLeft: true });
    }
  });
});

it("the VerifyToken typo case is a real refusal: the same call spelled right answers INSUFFICIENT_PERMISSIONS", async () => {
  const f = await fixture();
  const verdict = await clientsFor(t.baseUrl, "connect", f.caller.token).data.verifyToken({ token: f.target.token, allOf: ["apikeys:keys.write"] });
  expect(verdict.code).toBe(VerifyCode.INSUFFICIENT_PERMISSIONS);
});
