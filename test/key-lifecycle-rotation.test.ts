import { toJson } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { grantOwnPermissionsToAdminPolicy } from "../src/bootstrap.js";
import { ReportLeakedTokenResponseSchema, VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { generateToken } from "../src/tokens/token.js";
import { codeOf, rejection } from "./helpers/errors.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

type Clients = ReturnType<typeof clientsFor>;

let t: TestServer;
let policyId: string;
beforeAll(async () => {
  // The batched last-use write runs only when a test asks for it ("not written yet" must not race the timer).
  t = await startTestServer({ APIKEYS_USAGE_FLUSH_SECONDS: "3600" });
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "orders", permissions: [{ name: "read", description: "" }] });
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "orders-reader", permissions: ["orders:read"] })).policy!.id;
});
afterAll(() => t.stop());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(["connect", "grpc"] as const)("key lifecycle over %s", (protocol) => {
  let admin: Clients["admin"];
  let data: Clients["data"];
  beforeAll(() => {
    ({ admin, data } = clientsFor(t.baseUrl, protocol, t.adminToken));
  });
  const verify = (token: string) => data.verifyToken({ token, allOf: ["orders:read"] });
  let n = 0;
  const name = (what: string) => `${what}-${protocol}-${++n}`;

  describe("rotation", () => {
    it("without grace, stops the old token at once (even cached) and keeps id, policy and settings", async () => {
      const created = await admin.adminCreateApiKey({
        name: name("rot"),
        policyId,
        description: "kept",
        metadata: { team: "a" },
        allowedCidrs: ["10.0.0.0/8"],
        environment: { region: "eu" },
        rateLimit: { requests: 1000, period: durationFromMs(60_000) },
      });
      const old = created.token;
      const okFrom = (token: string) => data.verifyToken({ token, clientIp: "10.0.0.1" });
      expect((await okFrom(old)).code).toBe(VerifyCode.VALID);
      expect((await okFrom(old)).code).toBe(VerifyCode.VALID);

      const rotated = await admin.adminRotateApiKey({ id: created.apiKey!.id });
      expect(rotated.token).not.toBe(old);
      expect(rotated.apiKey?.start).toBe(rotated.token.slice(0, 7));
      expect((await okFrom(old)).code).toBe(VerifyCode.NOT_FOUND);
      const fresh = await okFrom(rotated.token);
      expect(fresh.code).toBe(VerifyCode.VALID);
      const { id, policy, description, metadata, allowedCidrs, environment, rateLimit } = fresh.apiKey!;
      expect({ id, policy: policy?.id, description, metadata, allowedCidrs, environment, requests: rateLimit?.requests }).toEqual({
        id: created.apiKey!.id,
        policy: policyId,
        description: "kept",
        metadata: { team: "a" },
        allowedCidrs: ["10.0.0.0/8"],
        environment: { region: "eu" },
        requests: 1000,
      });
    });

    it("with grace, accepts both tokens until the grace ends, exactly, also from the cache", async () => {
      const created = await admin.adminCreateApiKey({ name: name("grace"), policyId });
      const graceMs = 1500;
      const before = Date.now();
      const rotated = await admin.adminRotateApiKey({ id: created.apiKey!.id, gracePeriod: durationFromMs(graceMs) });
      const after = Date.now();
      expect((await verify(rotated.token)).code).toBe(VerifyCode.VALID);

      const lookups = t.server.ctx.verifier.dbLookups;
      let lastValid = 0;
      let firstRefused = 0;
      for (;;) {
        const start = Date.now();
        const res = await verify(created.token);
        const end = Date.now();
        if (res.code === VerifyCode.VALID) {
          // The server decided within [start, end]; grace ends no later than after + graceMs.
          expect(start).toBeLessThan(after + graceMs);
          expect(res.apiKey?.id).toBe(created.apiKey!.id);
          lastValid = end;
        } else {
          expect(res.code).toBe(VerifyCode.NOT_FOUND);
          // Grace ends no earlier than before + graceMs.
          expect(end).toBeGreaterThanOrEqual(before + graceMs);
          firstRefused = end;
          break;
        }
        await sleep(25);
      }
      expect(lastValid).toBeGreaterThan(0);
      expect(firstRefused).toBeGreaterThan(lastValid);
      // The old token was served from the cache during the grace, not read per call.
      expect(t.server.ctx.verifier.dbLookups - lookups).toBeLessThanOrEqual(2);
      expect((await verify(created.token)).code).toBe(VerifyCode.NOT_FOUND);
      expect((await verify(rotated.token)).code).toBe(VerifyCode.VALID);
    });

    it("rotating again during a grace period ends the first token's grace at once", async () => {
      const created = await admin.adminCreateApiKey({ name: name("twice"), policyId });
      const second = await admin.adminRotateApiKey({ id: created.apiKey!.id, gracePeriod: durationFromMs(60_000) });
      expect((await verify(created.token)).code).toBe(VerifyCode.VALID);
      const third = await admin.adminRotateApiKey({ id: created.apiKey!.id, gracePeriod: durationFromMs(60_000) });
      expect((await verify(created.token)).code).toBe(VerifyCode.NOT_FOUND);
      expect((await verify(second.token)).code).toBe(VerifyCode.VALID);
      expect((await verify(third.token)).code).toBe(VerifyCode.VALID);
    });

    it("refuses a bad grace period and an unknown key", async () => {
      const { apiKey } = await admin.adminCreateApiKey({ name: name("badgrace"), policyId });
      const tooLong = await rejection(admin.adminRotateApiKey({ id: apiKey!.id, gracePeriod: durationFromMs(31 * 86_400_000) }));
      expect(tooLong.code).toBe(Code.InvalidArgument);
      expect(tooLong.rawMessage).toMatch(/grace_period/);
      expect(await codeOf(admin.adminRotateApiKey({ id: apiKey!.id, gracePeriod: durationFromMs(-1000) }))).toBe(Code.InvalidArgument);
      expect(await codeOf(admin.adminRotateApiKey({ id: crypto.randomUUID() }))).toBe(Code.NotFound);
    });
  });

  describe("same name, same id", () => {
    it("gives a key re-created under a deleted key's name that key's id, with a new token", async () => {
      const keyName = name("reborn");
      const first = await admin.adminCreateApiKey({ name: keyName, policyId, description: "first life" });
      expect((await verify(first.token)).code).toBe(VerifyCode.VALID);
      await admin.adminDeleteApiKey({ id: first.apiKey!.id });
      expect((await verify(first.token)).code).toBe(VerifyCode.NOT_FOUND);

      const second = await admin.adminCreateApiKey({ name: keyName, policyId });
      expect(second.apiKey?.id).toBe(first.apiKey?.id);
      expect(second.token).not.toBe(first.token);
      expect(second.apiKey?.description).toBe("");
      expect((await verify(first.token)).code).toBe(VerifyCode.NOT_FOUND);
      expect((await verify(second.token)).code).toBe(VerifyCode.VALID);
      expect((await admin.adminGetApiKey({ id: first.apiKey!.id })).apiKey?.name).toBe(keyName);

      // The name holds the id only while its key is deleted.
      await expect(admin.adminCreateApiKey({ name: keyName, policyId })).rejects.toMatchObject({ code: Code.AlreadyExists });
      const other = await admin.adminCreateApiKey({ name: name("other"), policyId });
      expect(other.apiKey?.id).not.toBe(first.apiKey?.id);
    });

    it("remembers the name a key had when deleted, and keys deleted with their policy", async () => {
      const renamed = await admin.adminCreateApiKey({ name: name("before-rename"), policyId });
      const finalName = name("after-rename");
      await admin.adminUpdateApiKey({ id: renamed.apiKey!.id, name: finalName });
      await admin.adminDeleteApiKey({ id: renamed.apiKey!.id });
      expect((await admin.adminCreateApiKey({ name: finalName, policyId })).apiKey?.id).toBe(renamed.apiKey?.id);

      const doomedPolicy = (await admin.adminCreateApiKeyPolicy({ name: name("doomed-policy"), permissions: ["orders:read"] })).policy!;
      const keyName = name("cascaded");
      const cascaded = await admin.adminCreateApiKey({ name: keyName, policyId: doomedPolicy.id });
      expect((await admin.adminDeleteApiKeyPolicy({ id: doomedPolicy.id })).apiKeysDeleted).toBe(1);
      const back = await admin.adminCreateApiKey({ name: keyName, policyId });
      expect(back.apiKey?.id).toBe(cascaded.apiKey?.id);
      expect((await verify(cascaded.token)).code).toBe(VerifyCode.NOT_FOUND);
    });
  });

  it("deletes for good: every later call on the key says not found", async () => {
    const created = await admin.adminCreateApiKey({ name: name("gone"), policyId });
    const id = created.apiKey!.id;
    expect((await verify(created.token)).code).toBe(VerifyCode.VALID);
    const deleted = await admin.adminDeleteApiKey({ id });
    expect(deleted.apiKeyDeleted?.name).toBe(created.apiKey?.name);
    expect((await verify(created.token)).code).toBe(VerifyCode.NOT_FOUND);
    expect(await codeOf(clientsFor(t.baseUrl, protocol, created.token).data.testApiKey({}))).toBe(Code.Unauthenticated);
    for (const call of [
      () => admin.adminGetApiKey({ id }),
      () => admin.adminDeleteApiKey({ id }),
      () => admin.adminUpdateApiKey({ id, enabled: true }),
      () => admin.adminRotateApiKey({ id }),
    ]) {
      expect(await codeOf(call())).toBe(Code.NotFound);
    }
  });

  it("disabling and enabling keeps the token", async () => {
    const created = await admin.adminCreateApiKey({ name: name("toggle"), policyId });
    const id = created.apiKey!.id;
    expect((await verify(created.token)).code).toBe(VerifyCode.VALID);
    const disabled = await admin.adminUpdateApiKey({ id, enabled: false });
    expect(disabled.apiKey?.start).toBe(created.apiKey?.start);
    expect((await verify(created.token)).code).toBe(VerifyCode.DISABLED);
    expect((await rejection(clientsFor(t.baseUrl, protocol, created.token).data.testApiKey({}))).rawMessage).toMatch(/disabled/);
    const enabled = await admin.adminUpdateApiKey({ id, enabled: true });
    expect(enabled.apiKey?.start).toBe(created.apiKey?.start);
    expect((await verify(created.token)).code).toBe(VerifyCode.VALID);
  });

  it("records last use in batches, not per verification, and only for accepted ones", async () => {
    const used = await admin.adminCreateApiKey({ name: name("used"), policyId });
    const refused = await admin.adminCreateApiKey({ name: name("refused"), policyId });
    const before = Date.now();
    expect((await verify(used.token)).code).toBe(VerifyCode.VALID);
    expect((await data.verifyToken({ token: refused.token, allOf: ["orders:write"] })).code).toBe(
      VerifyCode.INSUFFICIENT_PERMISSIONS,
    );
    const after = Date.now();
    // Not written yet: the flush runs every APIKEYS_USAGE_FLUSH_SECONDS (an hour in this file).
    expect((await admin.adminGetApiKey({ id: used.apiKey!.id })).apiKey?.lastUsedOn).toBeUndefined();
    await t.server.ctx.verifier.flushLastUsed();
    const lastUsed = (await admin.adminGetApiKey({ id: used.apiKey!.id })).apiKey?.lastUsedOn;
    expect(lastUsed).toBeDefined();
    const at = timestampDate(lastUsed!).getTime();
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(after);
    expect((await admin.adminGetApiKey({ id: refused.apiKey!.id })).apiKey?.lastUsedOn).toBeUndefined();
  });

  it("records the admin key that created a key in created_by", async () => {
    const adminPolicy = (await admin.adminGetApiKeyPolicies({})).policies.find((p) => p.name === "apikeys-admin")!;
    const second = await admin.adminCreateApiKey({ name: name("second-admin"), policyId: adminPolicy.id });
    const bootstrapId = (await clientsFor(t.baseUrl, protocol, t.adminToken).data.testApiKey({})).apiKey!.id;
    expect(second.apiKey?.createdBy).toBe(bootstrapId);
    const made = await clientsFor(t.baseUrl, protocol, second.token).admin.adminCreateApiKey({ name: name("made"), policyId });
    expect(made.apiKey?.createdBy).toBe(second.apiKey?.id);
    expect((await admin.adminGetApiKey({ id: made.apiKey!.id })).apiKey?.createdBy).toBe(second.apiKey?.id);
    expect((await admin.adminGetApiKey({ id: bootstrapId })).apiKey?.createdBy).toBe("");
  });

  describe("leaked-token reports", () => {
    it("disable the key at once and say only whether it was found", async () => {
      const leaked = await admin.adminCreateApiKey({ name: name("leaked"), policyId });
      expect((await verify(leaked.token)).code).toBe(VerifyCode.VALID);
      const res = await data.reportLeakedToken({ token: leaked.token, sourceUrl: "https://paste.example/abc" });
      expect(res.recognized).toBe(true);
      expect(res.found).toBe(true);
      const wire = JSON.stringify(toJson(ReportLeakedTokenResponseSchema, res));
      expect(wire).not.toContain(leaked.apiKey!.id);
      expect(wire).not.toContain(leaked.apiKey!.name);
      expect((await verify(leaked.token)).code).toBe(VerifyCode.DISABLED);
      expect((await admin.adminGetApiKey({ id: leaked.apiKey!.id })).apiKey?.enabled).toBe(false);
    });

    it("cover a previous token still in its grace period", async () => {
      const created = await admin.adminCreateApiKey({ name: name("leaked-old"), policyId });
      const rotated = await admin.adminRotateApiKey({ id: created.apiKey!.id, gracePeriod: durationFromMs(60_000) });
      expect((await data.reportLeakedToken({ token: created.token, sourceUrl: "" })).found).toBe(true);
      expect((await verify(rotated.token)).code).toBe(VerifyCode.DISABLED);
    });

    it("tell ours from foreign tokens and refuse bad input", async () => {
      expect(await data.reportLeakedToken({ token: generateToken("ak"), sourceUrl: "" })).toMatchObject({ recognized: true, found: false });
      expect(await data.reportLeakedToken({ token: "ghp_notOursAtAll1234567890", sourceUrl: "" })).toMatchObject({
        recognized: false,
        found: false,
      });
      expect(await codeOf(data.reportLeakedToken({ token: "", sourceUrl: "" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(data.reportLeakedToken({ token: "x".repeat(2000), sourceUrl: "" }))).toBe(Code.InvalidArgument);
      const badUrl = await rejection(data.reportLeakedToken({ token: generateToken("ak"), sourceUrl: "ftp://x" }));
      expect(badUrl.code).toBe(Code.InvalidArgument);
      expect(badUrl.rawMessage).toMatch(/source_url/);
    });

    it("need apikeys:leaks.report", async () => {
      const plain = await admin.adminCreateApiKey({ name: name("no-report"), policyId });
      const err = await rejection(clientsFor(t.baseUrl, protocol, plain.token).data.reportLeakedToken({ token: plain.token, sourceUrl: "" }));
      expect(err.code).toBe(Code.PermissionDenied);
      expect(err.rawMessage).toContain("apikeys:leaks.report");
      expect((await verify(plain.token)).code).toBe(VerifyCode.VALID);
    });
  });
});

describe("the built-in admin policy", () => {
  it("gains apikeys permissions it lacks (as on a database bootstrapped by an older version)", async () => {
    const { admin, data } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const adminPolicy = (await admin.adminGetApiKeyPolicies({})).policies.find((p) => p.name === "apikeys-admin")!;
    expect(adminPolicy.permissions).toContain("apikeys:leaks.report");
    const db = t.server.ctx.db;
    await db.deleteFrom("policy_permissions").where("permission", "=", "apikeys:leaks.report").execute();
    t.server.ctx.verifier.invalidate({ kind: "policy", id: adminPolicy.id });
    expect(await codeOf(data.reportLeakedToken({ token: generateToken("ak"), sourceUrl: "" }))).toBe(Code.PermissionDenied);

    expect(await grantOwnPermissionsToAdminPolicy(db)).toEqual(["apikeys:leaks.report"]);
    expect(await grantOwnPermissionsToAdminPolicy(db)).toEqual([]);
    t.server.ctx.verifier.invalidate({ kind: "policy", id: adminPolicy.id });
    expect(await codeOf(data.reportLeakedToken({ token: generateToken("ak"), sourceUrl: "" }))).toBe("ok");
  });
});

describe("the batched last-use write", () => {
  it("runs by itself every APIKEYS_USAGE_FLUSH_SECONDS", async () => {
    const quick = await startTestServer({ APIKEYS_USAGE_FLUSH_SECONDS: "1" });
    try {
      const { admin, data } = clientsFor(quick.baseUrl, "connect", quick.adminToken);
      await data.registerPermissions({ service: "orders", permissions: [{ name: "read", description: "" }] });
      const policy = (await admin.adminCreateApiKeyPolicy({ name: "orders-reader", permissions: ["orders:read"] })).policy!;
      const key = await admin.adminCreateApiKey({ name: "flushed-by-the-timer", policyId: policy.id });
      expect((await data.verifyToken({ token: key.token })).code).toBe(VerifyCode.VALID);
      // No explicit flush: the 1 s timer writes it. Waited for up to 3.5 s from the verification, about 1 s
      // after the server started: the old fixed 5 s timer would first run some 4 s from here.
      let lastUsed;
      for (const deadline = Date.now() + 3_500; lastUsed === undefined && Date.now() < deadline; await sleep(100)) {
        lastUsed = (await admin.adminGetApiKey({ id: key.apiKey!.id })).apiKey?.lastUsedOn;
      }
      expect(lastUsed).toBeDefined();
    } finally {
      await quick.stop();
    }
  });
});
