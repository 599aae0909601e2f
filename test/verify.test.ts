import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { generateToken } from "../src/tokens/token.js";
import { codeOf, rejection } from "./helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
let token: string;
let policyId: string;
let verifierToken: string;
beforeAll(async () => {
  t = await startTestServer();
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({
    service: "billing",
    permissions: [
      { name: "read", description: "" },
      { name: "refund", description: "" },
      { name: "charge", description: "" },
    ],
  });
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "billing-reader", permissions: ["billing:read", "billing:charge"] })).policy!.id;
  token = (await admin.adminCreateApiKey({ name: "caller", policyId })).token;
  // A service that verifies keys holds only apikeys:verify.
  const verifierPolicy = await admin.adminCreateApiKeyPolicy({ name: "verifier", permissions: ["apikeys:verify"] });
  verifierToken = (await admin.adminCreateApiKey({ name: "gateway", policyId: verifierPolicy.policy!.id })).token;
});
afterAll(() => t.stop());

describe.each(PROTOCOLS)("VerifyToken over %s", (protocol) => {
  const data = () => clientsFor(t.baseUrl, protocol, verifierToken).data;

  it("accepts a valid key and returns the key, its permissions and a cache ttl", async () => {
    const res = await data().verifyToken({ token, allOf: ["billing:read"] });
    expect(res.valid).toBe(true);
    expect(res.code).toBe(VerifyCode.VALID);
    expect(res.apiKey?.name).toBe("caller");
    expect(res.apiKey?.policy?.name).toBe("billing-reader");
    expect(res.permissions).toEqual(["billing:charge", "billing:read"]);
    expect(res.missing).toEqual([]);
    expect(Number(res.cacheTtl?.seconds)).toBeGreaterThan(0);
  });

  it("reports missing permissions for all_of and any_of", async () => {
    const allOf = await data().verifyToken({ token, allOf: ["billing:read", "billing:refund"] });
    expect(allOf.valid).toBe(false);
    expect(allOf.code).toBe(VerifyCode.INSUFFICIENT_PERMISSIONS);
    expect(allOf.missing).toEqual(["billing:refund"]);
    expect(allOf.apiKey?.name).toBe("caller");

    expect((await data().verifyToken({ token, anyOf: ["billing:refund", "billing:charge"] })).valid).toBe(true);
    const anyOf = await data().verifyToken({ token, anyOf: ["billing:refund", "other:thing"] });
    expect(anyOf.code).toBe(VerifyCode.INSUFFICIENT_PERMISSIONS);
    expect(anyOf.missing).toEqual(["billing:refund", "other:thing"]);
  });

  it("refuses malformed and bad-checksum tokens without touching the database", async () => {
    const before = t.server.ctx.verifier.dbLookups;
    const typo = token.slice(0, 10) + (token[10] === "x" ? "y" : "x") + token.slice(11);
    for (const bad of ["", "garbage", "ak_short", typo, token + "0", `Bearer ${token}`, "ak_" + "z".repeat(5000)]) {
      const res = await data().verifyToken({ token: bad });
      expect(res.valid).toBe(false);
      expect(res.code).toBe(VerifyCode.NOT_FOUND);
      expect(res.apiKey).toBeUndefined();
    }
    expect(t.server.ctx.verifier.dbLookups).toBe(before);
  });

  it("refuses a well-formed unknown token with NOT_FOUND", async () => {
    const before = t.server.ctx.verifier.dbLookups;
    const res = await data().verifyToken({ token: generateToken("ak") });
    expect(res.code).toBe(VerifyCode.NOT_FOUND);
    expect(t.server.ctx.verifier.dbLookups).toBe(before + 1);
  });

  it("serves repeated verifications from the cache", async () => {
    await data().verifyToken({ token });
    const before = t.server.ctx.verifier.dbLookups;
    for (let i = 0; i < 5; i++) expect((await data().verifyToken({ token })).valid).toBe(true);
    expect(t.server.ctx.verifier.dbLookups).toBe(before);
  });

  it("refuses malformed permission names and client ips as invalid_argument", async () => {
    expect(await codeOf(data().verifyToken({ token, allOf: ["no-colon"] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(data().verifyToken({ token, anyOf: ["Bad:Case"] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(data().verifyToken({ token, clientIp: "999.1.1.1" }))).toBe(Code.InvalidArgument);
    expect((await data().verifyToken({ token, clientIp: "10.0.0.1" })).valid).toBe(true);
    expect((await data().verifyToken({ token, clientIp: "::1" })).valid).toBe(true);
  });
});

describe("policy changes", () => {
  it("take effect on the next verification, evicting cached verdicts", async () => {
    const { data, admin } = clientsFor(t.baseUrl, "grpc", t.adminToken);
    expect((await data.verifyToken({ token, allOf: ["billing:refund"] })).valid).toBe(false);
    await admin.adminUpdateApiKeyPolicy({ id: policyId, permissions: ["billing:read", "billing:refund"] });
    expect((await data.verifyToken({ token, allOf: ["billing:refund"] })).valid).toBe(true);
    await admin.adminUpdateApiKeyPolicy({ id: policyId, permissions: ["billing:read", "billing:charge"] });
    const res = await data.verifyToken({ token, allOf: ["billing:refund"] });
    expect(res.valid).toBe(false);
    expect(res.missing).toEqual(["billing:refund"]);
  });
});

describe("auth on the data plane", () => {
  it("needs apikeys:verify to call VerifyToken", async () => {
    const { data } = clientsFor(t.baseUrl, "connect", token);
    const err = await rejection(data.verifyToken({ token }));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.rawMessage).toContain("apikeys:verify");
  });

  it("needs apikeys:permissions.register to register permissions", async () => {
    const err = await rejection(clientsFor(t.baseUrl, "connect", verifierToken).data.registerPermissions({ service: "x", permissions: [] }));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.rawMessage).toContain("apikeys:permissions.register");
  });

  it("TestApiKey succeeds for any valid key and refuses anything else", async () => {
    const res = await clientsFor(t.baseUrl, "grpc", token).data.testApiKey({});
    expect(res.apiKey?.name).toBe("caller");
    expect(res.permissions).toEqual(["billing:charge", "billing:read"]);
    expect(await codeOf(clientsFor(t.baseUrl, "grpc").data.testApiKey({}))).toBe(Code.Unauthenticated);
    expect(await codeOf(clientsFor(t.baseUrl, "grpc", generateToken("ak")).data.testApiKey({}))).toBe(Code.Unauthenticated);
  });

  it("GetServiceHealth needs no key and reports the database, cache and rate-limit mode", async () => {
    const res = await clientsFor(t.baseUrl, "connect").data.getServiceHealth({});
    expect(res.healthy).toBe(true);
    expect(res.components.map((c) => [c.name, c.healthy])).toEqual([
      ["database", true],
      ["cache", true],
      ["rate_limits", true],
    ]);
    // Without REDIS_URL, limits are this instance's own, and the health answer says so.
    expect(res.components[2]!.message).toMatch(/^per instance/);
  });
});

describe("Verifier.verify without I/O", () => {
  // A cached key is judged in the calling task: no promise, so the fast path answers in the task that read the body.
  it("answers a cached key, a malformed token and a refusal at once, and a cold key as a promise", async () => {
    const verifier = t.server.ctx.verifier;
    verifier.cache.clear();
    const cold = verifier.verify(token, ["billing:read"], []);
    expect(cold).toBeInstanceOf(Promise);
    expect((await cold).code).toBe(VerifyCode.VALID);
    const warm = verifier.verify(token, ["billing:read"], []);
    expect(warm).not.toBeInstanceOf(Promise);
    expect(warm).toEqual(await verifier.verify(token, ["billing:read"], []));
    const lacking = verifier.verify(token, ["billing:refund"], ["billing:refund", "x:y"]);
    expect(lacking).not.toBeInstanceOf(Promise);
    expect(lacking).toMatchObject({ code: VerifyCode.INSUFFICIENT_PERMISSIONS, missing: ["billing:refund", "x:y"] });
    expect(verifier.verify("ak_malformed", [], [])).toEqual({ code: VerifyCode.NOT_FOUND, missing: [] });
  });
});
