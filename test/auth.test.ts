import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateToken } from "../src/tokens/token.js";
import { rejection } from "./helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
let readerToken: string;
let disabledToken: string;
beforeAll(async () => {
  t = await startTestServer();
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const reader = await admin.adminCreateApiKeyPolicy({ name: "key-reader", permissions: ["apikeys:keys.read"] });
  readerToken = (await admin.adminCreateApiKey({ name: "reader", policyId: reader.policy!.id })).token;
  const disabled = await admin.adminCreateApiKey({ name: "disabled", policyId: reader.policy!.id });
  await admin.adminUpdateApiKey({ id: disabled.apiKey!.id, enabled: false });
  disabledToken = disabled.token;
});
afterAll(() => t.stop());

describe.each(PROTOCOLS)("admin auth over %s", (protocol) => {
  it("refuses a call with no key as unauthenticated", async () => {
    const err = await rejection(clientsFor(t.baseUrl, protocol).admin.adminGetApiKeyPolicies({}));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toMatch(/missing API key/);
  });

  it("refuses garbage, unknown and disabled keys as unauthenticated", async () => {
    for (const token of ["garbage", generateToken("ak"), disabledToken]) {
      const err = await rejection(clientsFor(t.baseUrl, protocol, token).admin.adminGetApiKeys({}));
      expect(err.code).toBe(Code.Unauthenticated);
    }
  });

  it("refuses a key lacking the permission, naming it", async () => {
    const { admin } = clientsFor(t.baseUrl, protocol, readerToken);
    expect((await admin.adminGetApiKeys({})).apiKeys.length).toBeGreaterThan(0);
    const err = await rejection(admin.adminGetApiKeyPolicies({}));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.rawMessage).toContain("apikeys:policies.read");
    const write = await rejection(admin.adminCreateApiKey({ name: "nope", policyId: crypto.randomUUID() }));
    expect(write.code).toBe(Code.PermissionDenied);
    expect(write.rawMessage).toContain("apikeys:keys.write");
  });

  it("accepts the key in x-api-key as well as Authorization: Bearer", async () => {
    const { admin } = clientsFor(t.baseUrl, protocol);
    const res = await admin.adminGetApiKeys({}, { headers: { "x-api-key": readerToken } });
    expect(res.apiKeys.length).toBeGreaterThan(0);
    const lower = await admin.adminGetApiKeys({}, { headers: { authorization: `bearer ${readerToken}` } });
    expect(lower.apiKeys.length).toBeGreaterThan(0);
  });

  it("refuses an Authorization header that is not a Bearer token", async () => {
    const err = await rejection(
      clientsFor(t.baseUrl, protocol).admin.adminGetApiKeys({}, { headers: { authorization: `Basic ${readerToken}` } }),
    );
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toMatch(/Bearer/);
  });
});
