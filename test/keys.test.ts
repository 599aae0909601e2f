import { toJson } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { AdminGetApiKeyResponseSchema } from "../src/gen/apikeys/v1/admin_pb.js";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { hashToken } from "../src/tokens/token.js";
import { codeOf, rejection } from "./helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
let policyId: string;
let otherPolicyId: string;
beforeAll(async () => {
  t = await startTestServer();
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "orders", permissions: [{ name: "read", description: "" }, { name: "write", description: "" }] });
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "orders-reader", permissions: ["orders:read"] })).policy!.id;
  otherPolicyId = (await admin.adminCreateApiKeyPolicy({ name: "orders-writer", permissions: ["orders:write"] })).policy!.id;
});
afterAll(() => t.stop());

describe.each(PROTOCOLS)("keys over %s", (protocol) => {
  const admin = () => clientsFor(t.baseUrl, protocol, t.adminToken).admin;

  it("creates a key, returning the token once in the documented format", async () => {
    const created = await admin().adminCreateApiKey({ name: `svc-${protocol}`, policyId });
    expect(created.token).toMatch(/^ak_[0-9A-Za-z]{38}$/);
    expect(created.apiKey?.start).toBe(created.token.slice(0, 7));
    expect(created.apiKey?.policy?.id).toBe(policyId);
    expect(created.apiKey?.policy?.permissions).toEqual(["orders:read"]);
    expect(created.apiKey?.enabled).toBe(true);
    expect(created.apiKey?.createdBy).toMatch(/^[0-9a-f-]{36}$/);
    const fetched = await admin().adminGetApiKey({ id: created.apiKey!.id });
    expect(fetched.apiKey?.name).toBe(`svc-${protocol}`);
    expect(JSON.stringify(toJson(AdminGetApiKeyResponseSchema, fetched))).not.toContain(created.token.slice(7));
  });

  it("stores only the hash and the display start", async () => {
    const created = await admin().adminCreateApiKey({ name: `hashed-${protocol}`, policyId });
    const db = t.server.ctx.db;
    const row = await db.selectFrom("api_keys").selectAll().where("id", "=", created.apiKey!.id).executeTakeFirstOrThrow();
    expect(Buffer.from(row.token_hash!).equals(hashToken(created.token, undefined))).toBe(true);
    const secret = created.token.slice(7);
    const dump = await sql<{ t: string }>`select string_agg(t::text, ' ') as t from api_keys t`.execute(db);
    expect(dump.rows[0]!.t).not.toContain(secret);
    expect(dump.rows[0]!.t).not.toContain(created.token);
  });

  it("refuses a missing policy, a duplicate name and bad input", async () => {
    expect(await codeOf(admin().adminCreateApiKey({ name: `x-${protocol}`, policyId: crypto.randomUUID() }))).toBe(Code.NotFound);
    await admin().adminCreateApiKey({ name: `dup-${protocol}`, policyId });
    const dup = await rejection(admin().adminCreateApiKey({ name: `dup-${protocol}`, policyId }));
    expect(dup.code).toBe(Code.AlreadyExists);
    expect(dup.rawMessage).toMatch(/API key with this name already exists/);
    expect(await codeOf(admin().adminCreateApiKey({ name: "", policyId }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().adminCreateApiKey({ name: "ok", policyId: "not-a-uuid" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().adminCreateApiKey({ name: "tab\tname", policyId }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().adminGetApiKey({ id: crypto.randomUUID() }))).toBe(Code.NotFound);
  });

  it("renames, moves and disables a key; the change is visible to verification at once", async () => {
    const created = await admin().adminCreateApiKey({ name: `mover-${protocol}`, policyId });
    const { data } = clientsFor(t.baseUrl, protocol, t.adminToken);
    expect((await data.verifyToken({ token: created.token, allOf: ["orders:read"] })).code).toBe(VerifyCode.VALID);

    const moved = await admin().adminUpdateApiKey({ id: created.apiKey!.id, name: `moved-${protocol}`, policyId: otherPolicyId });
    expect(moved.apiKey?.name).toBe(`moved-${protocol}`);
    expect(moved.apiKey?.policy?.name).toBe("orders-writer");
    const afterMove = await data.verifyToken({ token: created.token, allOf: ["orders:read"] });
    expect(afterMove.code).toBe(VerifyCode.INSUFFICIENT_PERMISSIONS);
    expect(afterMove.missing).toEqual(["orders:read"]);

    const disabled = await admin().adminUpdateApiKey({ id: created.apiKey!.id, enabled: false });
    expect(disabled.apiKey?.enabled).toBe(false);
    expect(disabled.apiKey?.name).toBe(`moved-${protocol}`);
    expect((await data.verifyToken({ token: created.token })).code).toBe(VerifyCode.DISABLED);

    const enabled = await admin().adminUpdateApiKey({ id: created.apiKey!.id, enabled: true, updateMask: { paths: ["enabled"] } });
    expect(enabled.apiKey?.enabled).toBe(true);
    expect((await data.verifyToken({ token: created.token })).code).toBe(VerifyCode.VALID);

    expect(await codeOf(admin().adminUpdateApiKey({ id: created.apiKey!.id, policyId: crypto.randomUUID() }))).toBe(Code.NotFound);
    expect(await codeOf(admin().adminUpdateApiKey({ id: created.apiKey!.id }))).toBe(Code.InvalidArgument);
  });

  it("deletes a key for good", async () => {
    const created = await admin().adminCreateApiKey({ name: `doomed-${protocol}`, policyId });
    const { data } = clientsFor(t.baseUrl, protocol, t.adminToken);
    expect((await data.verifyToken({ token: created.token })).valid).toBe(true);
    const deleted = await admin().adminDeleteApiKey({ id: created.apiKey!.id });
    expect(deleted.apiKeyDeleted?.id).toBe(created.apiKey!.id);
    expect((await data.verifyToken({ token: created.token })).code).toBe(VerifyCode.NOT_FOUND);
    expect(await codeOf(admin().adminDeleteApiKey({ id: created.apiKey!.id }))).toBe(Code.NotFound);
    expect(await codeOf(admin().adminGetApiKey({ id: created.apiKey!.id }))).toBe(Code.NotFound);
  });

  it("rotates a token: the old one stops at once without a grace period", async () => {
    const created = await admin().adminCreateApiKey({ name: `rotated-${protocol}`, policyId });
    const { data } = clientsFor(t.baseUrl, protocol, t.adminToken);
    expect((await data.verifyToken({ token: created.token })).valid).toBe(true);
    const rotated = await admin().adminRotateApiKey({ id: created.apiKey!.id });
    expect(rotated.token).not.toBe(created.token);
    expect(rotated.apiKey?.id).toBe(created.apiKey!.id);
    expect((await data.verifyToken({ token: created.token })).code).toBe(VerifyCode.NOT_FOUND);
    expect((await data.verifyToken({ token: rotated.token })).valid).toBe(true);
  });
});

describe("key listing", () => {
  it("pages through every key exactly once and filters by policy", async () => {
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const { policy } = await admin.adminCreateApiKeyPolicy({ name: "paging", permissions: [] });
    const ids = new Set<string>();
    for (let i = 0; i < 7; i++) ids.add((await admin.adminCreateApiKey({ name: `page-${i}`, policyId: policy!.id })).apiKey!.id);

    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await admin.adminGetApiKeys({ pageSize: 3, pageToken, policyId: policy!.id });
      expect(page.apiKeys.length).toBeLessThanOrEqual(3);
      seen.push(...page.apiKeys.map((k) => k.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "");
    expect(pages).toBe(3);
    expect(new Set(seen)).toEqual(ids);
    expect(seen).toHaveLength(7);

    const all = await admin.adminGetApiKeys({ pageSize: 1000 });
    expect(all.apiKeys.length).toBeGreaterThan(7);
    expect(await codeOf(admin.adminGetApiKeys({ pageSize: 1001 }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin.adminGetApiKeys({ pageToken: "garbage" }))).toBe(Code.InvalidArgument);
  });
});
