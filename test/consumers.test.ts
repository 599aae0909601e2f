import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { codeOf, rejection } from "./helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
let readPolicy: string;
let writePolicy: string;
beforeAll(async () => {
  t = await startTestServer();
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "billing", permissions: [{ name: "read", description: "" }, { name: "write", description: "" }] });
  readPolicy = (await admin.adminCreateApiKeyPolicy({ name: "billing-read", permissions: ["billing:read"] })).policy!.id;
  writePolicy = (await admin.adminCreateApiKeyPolicy({ name: "billing-write", permissions: ["billing:write"] })).policy!.id;
});
afterAll(() => t.stop());

describe.each(PROTOCOLS)("consumers over %s", (protocol) => {
  const clients = () => clientsFor(t.baseUrl, protocol, t.adminToken);
  const admin = () => clients().admin;

  it("creates a consumer and reads it by id and by username", async () => {
    const { consumer } = await admin().adminCreateConsumer({ username: `partner-${protocol}` });
    expect(consumer?.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(consumer?.username).toBe(`partner-${protocol}`);
    expect(consumer?.createdBy).toMatch(/^[0-9a-f-]{36}$/);
    expect(consumer?.grantedPolicies).toEqual([]);
    const byId = await admin().adminGetConsumer({ consumer: consumer!.id });
    const byName = await admin().adminGetConsumer({ consumer: `partner-${protocol}` });
    expect(byId.consumer?.id).toBe(consumer!.id);
    expect(byName.consumer?.id).toBe(consumer!.id);
    expect(byName.apiKeys).toEqual([]);
  });

  it("refuses bad usernames with a clear invalid_argument, and duplicates with already_exists", async () => {
    for (const [username, message] of [
      ["", /required/],
      ["has space", /whitespace/],
      ["tab\there", /whitespace/],
      ["new\nline", /whitespace/],
      [" leading", /whitespace/],
      ["0b0e8e0c-7f5e-4a53-9a43-2f1b8c3d4e5f", /UUID/],
      ["0B0E8E0C-7F5E-4A53-9A43-2F1B8C3D4E5F", /UUID/],
      ["x".repeat(201), /at most 200/],
    ] as const) {
      const err = await rejection(admin().adminCreateConsumer({ username }));
      expect(err.code, username).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toMatch(message);
    }
    await admin().adminCreateConsumer({ username: `dup-${protocol}` });
    const dup = await rejection(admin().adminCreateConsumer({ username: `dup-${protocol}` }));
    expect(dup.code).toBe(Code.AlreadyExists);
    expect(dup.rawMessage).toMatch(/consumer with this username already exists/);
    expect(await codeOf(admin().adminGetConsumer({ consumer: "nobody-here" }))).toBe(Code.NotFound);
    expect(await codeOf(admin().adminGetConsumer({ consumer: crypto.randomUUID() }))).toBe(Code.NotFound);
    expect(await codeOf(admin().adminGetConsumer({ consumer: "" }))).toBe(Code.InvalidArgument);
  });

  it("lets a consumer's key use only granted policies, on create and on policy change", async () => {
    const username = `team-${protocol}`;
    await admin().adminCreateConsumer({ username });
    const refused = await rejection(admin().adminCreateApiKey({ name: `k-${protocol}`, policyId: readPolicy, consumer: username }));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(refused.rawMessage).toContain(`not granted to consumer ${username}`);

    const granted = await admin().adminGrantConsumerPolicies({ consumer: username, policyIds: [readPolicy, readPolicy] });
    expect(granted.consumer?.grantedPolicies.map((p) => p.name)).toEqual(["billing-read"]);
    const again = await admin().adminGrantConsumerPolicies({ consumer: username, policyIds: [readPolicy] });
    expect(again.consumer?.grantedPolicies).toHaveLength(1);

    const { apiKey, token } = await admin().adminCreateApiKey({ name: `k-${protocol}`, policyId: readPolicy, consumer: username });
    expect(apiKey?.consumerUsername).toBe(username);
    expect(apiKey?.consumerId).toBe(granted.consumer!.id);
    const verdict = await clients().data.verifyToken({ token, allOf: ["billing:read"] });
    expect(verdict.code).toBe(VerifyCode.VALID);
    expect(verdict.apiKey?.consumerUsername).toBe(username);

    const move = await rejection(admin().adminUpdateApiKey({ id: apiKey!.id, policyId: writePolicy }));
    expect(move.code).toBe(Code.FailedPrecondition);
    await admin().adminGrantConsumerPolicies({ consumer: username, policyIds: [writePolicy] });
    const moved = await admin().adminUpdateApiKey({ id: apiKey!.id, policyId: writePolicy });
    expect(moved.apiKey?.policy?.id).toBe(writePolicy);

    const inUse = await rejection(admin().adminRevokeConsumerPolicies({ consumer: username, policyIds: [writePolicy] }));
    expect(inUse.code).toBe(Code.FailedPrecondition);
    expect(inUse.rawMessage).toContain(`k-${protocol}`);
    const revoked = await admin().adminRevokeConsumerPolicies({ consumer: username, policyIds: [readPolicy] });
    expect(revoked.consumer?.grantedPolicies.map((p) => p.id)).toEqual([writePolicy]);
    expect(await codeOf(admin().adminCreateApiKey({ name: `k2-${protocol}`, policyId: readPolicy, consumer: username }))).toBe(
      Code.FailedPrecondition,
    );

    const fetched = await admin().adminGetConsumer({ consumer: username });
    expect(fetched.apiKeys.map((k) => k.id)).toEqual([apiKey!.id]);
    expect(fetched.consumer?.grantedPolicies.map((p) => p.name)).toEqual(["billing-write"]);
    const listed = await admin().adminGetApiKeys({ consumer: username });
    expect(listed.apiKeys.map((k) => k.id)).toEqual([apiKey!.id]);
  });

  it("attaches a key to a consumer, moves it to another and detaches it, honouring grants", async () => {
    const [a, b] = [`owner-a-${protocol}`, `owner-b-${protocol}`];
    await admin().adminCreateConsumer({ username: a });
    await admin().adminCreateConsumer({ username: b });
    await admin().adminGrantConsumerPolicies({ consumer: a, policyIds: [readPolicy] });
    const { apiKey } = await admin().adminCreateApiKey({ name: `free-${protocol}`, policyId: readPolicy });
    expect(apiKey?.consumerId).toBe("");

    const attached = await admin().adminUpdateApiKey({ id: apiKey!.id, consumer: a });
    expect(attached.apiKey?.consumerUsername).toBe(a);
    expect(await codeOf(admin().adminUpdateApiKey({ id: apiKey!.id, consumer: b }))).toBe(Code.FailedPrecondition);
    await admin().adminGrantConsumerPolicies({ consumer: b, policyIds: [readPolicy] });
    const moved = await admin().adminUpdateApiKey({ id: apiKey!.id, consumer: b });
    expect(moved.apiKey?.consumerUsername).toBe(b);
    expect((await admin().adminGetConsumer({ consumer: a })).apiKeys).toEqual([]);
    expect(await codeOf(admin().adminUpdateApiKey({ id: apiKey!.id, consumer: "no-such-consumer" }))).toBe(Code.NotFound);

    const detached = await admin().adminUpdateApiKey({ id: apiKey!.id, consumer: "", updateMask: { paths: ["consumer"] } });
    expect(detached.apiKey?.consumerId).toBe("");
    // Without a consumer, any policy will do again.
    expect((await admin().adminUpdateApiKey({ id: apiKey!.id, policyId: writePolicy })).apiKey?.policy?.id).toBe(writePolicy);
  });

  it("refuses unknown consumers and policies", async () => {
    await admin().adminCreateConsumer({ username: `lonely-${protocol}` });
    expect(await codeOf(admin().adminCreateApiKey({ name: `x-${protocol}`, policyId: readPolicy, consumer: "no-such-consumer" }))).toBe(
      Code.NotFound,
    );
    expect(await codeOf(admin().adminGrantConsumerPolicies({ consumer: `lonely-${protocol}`, policyIds: [crypto.randomUUID()] }))).toBe(
      Code.NotFound,
    );
    expect(await codeOf(admin().adminGrantConsumerPolicies({ consumer: `lonely-${protocol}`, policyIds: ["bad"] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().adminGrantConsumerPolicies({ consumer: `lonely-${protocol}`, policyIds: [] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin().adminGrantConsumerPolicies({ consumer: "no-such-consumer", policyIds: [readPolicy] }))).toBe(Code.NotFound);
    expect(await codeOf(admin().adminGetApiKeys({ consumer: "no-such-consumer" }))).toBe(Code.NotFound);
  });

  it("deletes a consumer with all its keys; their tokens stop working at once", async () => {
    const username = `gone-${protocol}`;
    const { consumer } = await admin().adminCreateConsumer({ username });
    await admin().adminGrantConsumerPolicies({ consumer: username, policyIds: [readPolicy] });
    const tokens: string[] = [];
    for (const i of [1, 2, 3]) {
      const created = await admin().adminCreateApiKey({ name: `${username}-${i}`, policyId: readPolicy, consumer: consumer!.id });
      tokens.push(created.token);
      expect((await clients().data.verifyToken({ token: created.token })).code).toBe(VerifyCode.VALID);
    }
    const bystander = await admin().adminCreateApiKey({ name: `bystander-${protocol}`, policyId: readPolicy });

    const deleted = await admin().adminDeleteConsumer({ consumer: username });
    expect(deleted.apiKeysDeleted).toBe(3);
    expect(deleted.consumerDeleted?.username).toBe(username);
    for (const token of tokens) expect((await clients().data.verifyToken({ token })).code).toBe(VerifyCode.NOT_FOUND);
    expect((await clients().data.verifyToken({ token: bystander.token })).code).toBe(VerifyCode.VALID);
    expect(await codeOf(admin().adminGetConsumer({ consumer: username }))).toBe(Code.NotFound);
    expect(await codeOf(admin().adminDeleteConsumer({ consumer: username }))).toBe(Code.NotFound);
    // The username is free again.
    await admin().adminCreateConsumer({ username });
  });
});

describe("consumer listing and REST", () => {
  it("lists consumers by username in pages", async () => {
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    for (const name of ["page-c", "page-a", "page-b"]) await admin.adminCreateConsumer({ username: name });
    const all: string[] = [];
    let pageToken = "";
    do {
      const page = await admin.adminGetConsumers({ pageSize: 2, pageToken });
      expect(page.consumers.length).toBeLessThanOrEqual(2);
      all.push(...page.consumers.map((c) => c.username));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(all).toEqual([...all].sort());
    expect(all).toEqual(expect.arrayContaining(["page-a", "page-b", "page-c"]));
    expect(new Set(all).size).toBe(all.length);
    expect(await codeOf(admin.adminGetConsumers({ pageSize: -1 }))).toBe(Code.InvalidArgument);
  });

  it("serves the consumer RPCs over REST", async () => {
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${t.baseUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${t.adminToken}`, ...(body !== undefined && { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, json: (await res.json()) as any };
    };
    const created = await call("POST", "/api/v1/api_keys/consumers", { username: "rest-partner" });
    expect(created.status).toBe(200);
    expect(created.json.consumer.username).toBe("rest-partner");
    const granted = await call("POST", "/api/v1/api_keys/consumers/rest-partner/policies:grant", { policyIds: [readPolicy] });
    expect(granted.status).toBe(200);
    expect(granted.json.consumer.grantedPolicies[0].id).toBe(readPolicy);
    const key = await call("POST", "/api/v1/api_keys", { name: "rest-partner-key", policyId: readPolicy, consumer: "rest-partner" });
    expect(key.status).toBe(200);
    const fetched = await call("GET", "/api/v1/api_keys/consumers/rest-partner");
    expect(fetched.json.apiKeys[0].consumerUsername).toBe("rest-partner");
    const listed = await call("GET", "/api/v1/api_keys/consumers?page_size=1000");
    expect(listed.json.consumers.map((c: { username: string }) => c.username)).toContain("rest-partner");
    const bad = await call("POST", "/api/v1/api_keys/consumers", { username: "white space" });
    expect(bad.status).toBe(400);
    const revoke = await call("POST", "/api/v1/api_keys/consumers/rest-partner/policies:revoke", { policyIds: [readPolicy] });
    expect(revoke.status).toBe(400);
    const deleted = await call("DELETE", `/api/v1/api_keys/consumers/${created.json.consumer.id}`);
    expect(deleted.status).toBe(200);
    expect(deleted.json.apiKeysDeleted).toBe(1);
  });
});
