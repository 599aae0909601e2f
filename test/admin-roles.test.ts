import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { codeOf } from "./helpers/errors.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

describe.each(["connect", "grpc"] as const)("replacing the bootstrap key over %s", (protocol) => {
  it("creates a real admin key, deletes the bootstrap key with it, and only the new key works", async () => {
    t = await startTestServer();
    const bootstrap = clientsFor(t.baseUrl, protocol, t.adminToken);
    const bootstrapKey = (await bootstrap.data.testApiKey({})).apiKey!;
    expect(bootstrapKey.name).toBe("bootstrap");

    // An admin is whoever holds a key on the admin policy.
    const adminPolicy = (await bootstrap.admin.adminGetApiKeyPolicies({})).policies.find((p) => p.name === "apikeys-admin")!;
    const { apiKey: adminKey, token: adminToken } = await bootstrap.admin.adminCreateApiKey({
      name: "ops-admin",
      policyId: adminPolicy.id,
    });
    expect(adminKey?.createdBy).toBe(bootstrapKey.id);

    const admin = clientsFor(t.baseUrl, protocol, adminToken);
    const deleted = await admin.admin.adminDeleteApiKey({ id: bootstrapKey.id });
    expect(deleted.apiKeyDeleted?.id).toBe(bootstrapKey.id);

    expect(await codeOf(bootstrap.data.testApiKey({}))).toBe(Code.Unauthenticated);
    expect(await codeOf(bootstrap.admin.adminGetApiKeys({}))).toBe(Code.Unauthenticated);
    expect((await admin.data.verifyToken({ token: t.adminToken })).code).toBe(VerifyCode.NOT_FOUND);

    const keys = await admin.admin.adminGetApiKeys({});
    expect(keys.apiKeys.map((k) => k.name)).toEqual(["ops-admin"]);
    const policy = await admin.admin.adminCreateApiKeyPolicy({ name: "after-bootstrap", permissions: ["apikeys:keys.read"] });
    expect(policy.policy?.createdBy).toBe(adminKey!.id);
  });
});

describe("admin is a matter of policy", () => {
  it("a key loses admin rights when moved off the admin policy, and regains them when moved back", async () => {
    t = await startTestServer();
    const root = clientsFor(t.baseUrl, "connect", t.adminToken).admin;
    const adminPolicy = (await root.adminGetApiKeyPolicies({})).policies.find((p) => p.name === "apikeys-admin")!;
    const plain = (await root.adminCreateApiKeyPolicy({ name: "plain", permissions: ["apikeys:keys.read"] })).policy!;
    const { apiKey, token } = await root.adminCreateApiKey({ name: "deputy", policyId: adminPolicy.id });
    const deputy = clientsFor(t.baseUrl, "connect", token).admin;
    expect(await codeOf(deputy.adminCreateConsumer({ username: "deputy-made" }))).toBe("ok");

    await root.adminUpdateApiKey({ id: apiKey!.id, policyId: plain.id });
    expect(await codeOf(deputy.adminCreateConsumer({ username: "deputy-demoted" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(deputy.adminGetApiKeys({}))).toBe("ok");

    await root.adminUpdateApiKey({ id: apiKey!.id, policyId: adminPolicy.id });
    expect(await codeOf(deputy.adminCreateConsumer({ username: "deputy-promoted" }))).toBe("ok");
  });
});
