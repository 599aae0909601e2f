import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { AuditStage } from "../../src/gen/apikeys/v1/audit_pb.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/**
 * The privilege escalations reported in issue 11, each replayed as the attacker
 * ran it: every one of them succeeded before the no-escalation rule.
 */

let t: TestServer;
let root: ReturnType<typeof clientsFor>;
let adminPolicyId: string;
let bootstrapKeyId: string;

async function refusal(call: () => Promise<unknown>): Promise<ConnectError | undefined> {
  return call().then(
    () => undefined,
    (err: unknown) => ConnectError.from(err),
  );
}

/** A key on a new policy holding exactly `permissions`, optionally held by a consumer. */
async function keyWith(name: string, permissions: string[], consumer?: string) {
  const policy = (await root.admin.adminCreateApiKeyPolicy({ name, permissions })).policy!;
  if (consumer !== undefined) await root.admin.adminGrantConsumerPolicies({ consumer, policyIds: [policy.id] });
  const { apiKey, token } = await root.admin.adminCreateApiKey({ name, policyId: policy.id, consumer });
  return { key: apiKey!, token, policy, clients: clientsFor(t.baseUrl, "connect", token) };
}

beforeAll(async () => {
  t = await startTestServer();
  root = clientsFor(t.baseUrl, "connect", t.adminToken);
  adminPolicyId = (await root.admin.adminGetApiKeyPolicies({})).policies.find((p) => p.name === "apikeys-admin")!.id;
  bootstrapKeyId = (await root.data.testApiKey({})).apiKey!.id;
});

afterAll(async () => {
  await t?.stop();
});

describe("apikeys:keys.write alone does not make a full admin", () => {
  it("cannot create a key on apikeys-admin", async () => {
    const attacker = await keyWith("keys-writer-1", ["apikeys:keys.write"]);
    const err = await refusal(() => attacker.clients.admin.adminCreateApiKey({ name: "stolen-admin", policyId: adminPolicyId }));
    expect(err?.code).toBe(Code.PermissionDenied);
    expect(err?.rawMessage).toMatch(/^policy apikeys-admin \(.+\) grants apikeys:audit\.read, .*apikeys:policies\.write.*, which your key lacks/);
    expect(err?.rawMessage).not.toContain("apikeys:keys.write,");
    const names = (await root.admin.adminGetApiKeys({})).apiKeys.map((k) => k.name);
    expect(names).not.toContain("stolen-admin");
    // The attempt is on record, refused, with the reason.
    const events = (await root.admin.adminGetAuditEvents({ actorKeyId: attacker.key.id })).events;
    const failure = events.find((e) => e.rpc.endsWith("/AdminCreateApiKey") && e.stage === AuditStage.FAILURE);
    expect(failure?.code).toBe("permission_denied");
    expect(failure?.message).toContain("which your key lacks");
  });

  it("cannot move its own key onto apikeys-admin", async () => {
    const attacker = await keyWith("keys-writer-2", ["apikeys:keys.write"]);
    const err = await refusal(() => attacker.clients.admin.adminUpdateApiKey({ id: attacker.key.id, policyId: adminPolicyId }));
    expect(err?.code).toBe(Code.PermissionDenied);
    expect((await root.admin.adminGetApiKey({ id: attacker.key.id })).apiKey?.policy?.id).toBe(attacker.policy.id);
    expect((await refusal(() => attacker.clients.admin.adminCreateConsumer({ username: "after-move" })))?.code).toBe(Code.PermissionDenied);
  });

  it("learns no admin key id from TestApiKey, and cannot read or rotate an admin's key by its id", async () => {
    const attacker = await keyWith("keys-writer-3", ["apikeys:keys.write"]);
    const self = await attacker.clients.data.testApiKey({});
    expect(self.apiKey?.id).toBe(attacker.key.id);
    expect(self.apiKey?.createdBy).toBe("");
    expect(self.apiKey?.policy?.createdBy).toBe("");
    // The id leaks some other way: a no-op update no longer reads the admin key back,
    // and a rotation no longer hands over its token.
    const noop = await refusal(() => attacker.clients.admin.adminUpdateApiKey({ id: bootstrapKeyId, enabled: true }));
    expect(noop?.code).toBe(Code.PermissionDenied);
    const rotate = await refusal(() => attacker.clients.admin.adminRotateApiKey({ id: bootstrapKeyId }));
    expect(rotate?.code).toBe(Code.PermissionDenied);
    expect((await root.data.verifyToken({ token: t.adminToken })).code).toBe(VerifyCode.VALID);
    // A key that may read every key still sees who created it.
    const reader = await keyWith("keys-reader", ["apikeys:keys.read"]);
    expect((await reader.clients.data.testApiKey({})).apiKey?.createdBy).toBe(bootstrapKeyId);
  });
});

describe("what a partial admin holds, it may still hand out", () => {
  it("a keys.write key creates keys on its own policy and on policies without apikeys: permissions", async () => {
    const admin = await keyWith("keys-writer-4", ["apikeys:keys.write"]);
    const plain = (await root.admin.adminCreateApiKeyPolicy({ name: "plain-4", permissions: [] })).policy!;
    const peer = await admin.clients.admin.adminCreateApiKey({ name: "keys-writer-4-peer", policyId: admin.policy.id });
    expect(peer.apiKey?.createdBy).toBe(admin.key.id);
    const moved = await admin.clients.admin.adminUpdateApiKey({ id: peer.apiKey!.id, policyId: plain.id });
    expect(moved.apiKey?.policy?.id).toBe(plain.id);
    expect((await admin.clients.admin.adminRotateApiKey({ id: peer.apiKey!.id })).token).not.toBe(peer.token);
  });
});

describe("apikeys:policies.write alone does not make a full admin", () => {
  it("cannot add every apikeys: permission to its own policy", async () => {
    const attacker = await keyWith("policy-writer", ["apikeys:policies.write"]);
    const every = (await root.admin.adminGetApiKeyPermissions({})).permissions.filter((p) => p.service === "apikeys").map((p) => p.name);
    const err = await refusal(() => attacker.clients.admin.adminUpdateApiKeyPolicy({ id: attacker.policy.id, permissions: every }));
    expect(err?.code).toBe(Code.PermissionDenied);
    expect(err?.rawMessage).toMatch(/policy-writer .* as updated grants apikeys:audit\.read/);
    const after = (await root.admin.adminGetApiKeyPolicies({})).policies.find((p) => p.id === attacker.policy.id)!;
    expect(after.permissions).toEqual(["apikeys:policies.write"]);
    expect((await refusal(() => attacker.clients.admin.adminGetApiKeys({})))?.code).toBe(Code.PermissionDenied);
  });
});

describe("a consumer's key administers only that consumer's keys", () => {
  it("a key of consumer A cannot delete consumer B's key", async () => {
    const a = (await root.admin.adminCreateConsumer({ username: "consumer-a" })).consumer!.id;
    const b = (await root.admin.adminCreateConsumer({ username: "consumer-b" })).consumer!.id;
    const attacker = await keyWith("consumer-a-admin", ["apikeys:keys.write"], a);
    const victim = await keyWith("consumer-b-key", [], b);
    const err = await refusal(() => attacker.clients.admin.adminDeleteApiKey({ id: victim.key.id }));
    expect(err?.code).toBe(Code.PermissionDenied);
    expect(err?.rawMessage).toContain("consumer consumer-a");
    expect((await root.data.verifyToken({ token: victim.token })).code).toBe(VerifyCode.VALID);
  });
});

describe("apikeys:permissions.register registers only its own namespaces", () => {
  it("cannot rewrite or deprecate another service's permissions", async () => {
    const billing = await keyWith("billing-service", ["apikeys:permissions.register"]);
    await billing.clients.data.registerPermissions({ service: "billing", permissions: [{ name: "refund", description: "Refund a charge." }] });
    const attacker = await keyWith("other-service", ["apikeys:permissions.register"]);
    for (const permissions of [[{ name: "refund", description: "Anything goes." }], []]) {
      const err = await refusal(() => attacker.clients.data.registerPermissions({ service: "billing", permissions }));
      expect(err?.code).toBe(Code.PermissionDenied);
      expect(err?.rawMessage).toContain('the "billing" namespace is owned by another policy');
    }
    const declared = (await root.admin.adminGetApiKeyPermissions({})).permissions.filter((p) => p.service === "billing");
    expect(declared.map((p) => [p.name, p.description, p.deprecated])).toEqual([["billing:refund", "Refund a charge.", false]]);
    // Its owner still can.
    const again = await billing.clients.data.registerPermissions({ service: "billing", permissions: [{ name: "refund", description: "Refund." }] });
    expect(again.permissions.map((p) => p.description)).toEqual(["Refund."]);
  });

  it("cannot register a lookalike of the server's own namespace", async () => {
    const attacker = await keyWith("lookalike", ["apikeys:permissions.register"]);
    const err = await refusal(() =>
      attacker.clients.data.registerPermissions({ service: "apikeys.x", permissions: [{ name: "keys.write", description: "" }] }),
    );
    expect(err?.code).toBe(Code.PermissionDenied);
    expect((await root.admin.adminGetApiKeyPermissions({})).permissions.filter((p) => p.service === "apikeys.x")).toEqual([]);
  });
});

describe("namespace ownership", () => {
  const register = (clients: ReturnType<typeof clientsFor>, service: string, description: string) =>
    refusal(() => clients.data.registerPermissions({ service, permissions: [{ name: "use", description }] }));

  it("a consumer's namespace is registered by any key of that consumer, and by nobody else", async () => {
    const team = (await root.admin.adminCreateConsumer({ username: "ns-team" })).consumer!.id;
    const first = await keyWith("ns-team-first", ["apikeys:permissions.register"], team);
    const second = await keyWith("ns-team-second", ["apikeys:permissions.register", "apikeys:verify"], team);
    const outsider = await keyWith("ns-outsider", ["apikeys:permissions.register"]);
    expect(await register(first.clients, "teamns", "one")).toBeUndefined();
    expect(await register(second.clients, "teamns", "two")).toBeUndefined();
    const err = await register(outsider.clients, "teamns", "three");
    expect(err?.code).toBe(Code.PermissionDenied);
    expect(err?.rawMessage).toContain('the "teamns" namespace is owned by another consumer, the first to register it; your key registers for its policy');
    const declared = (await root.admin.adminGetApiKeyPermissions({})).permissions.filter((p) => p.service === "teamns");
    expect(declared.map((p) => p.description)).toEqual(["two"]);
  });

  it("a namespace without an owner (as every one is right after the upgrade) goes to the next registration", async () => {
    const before = await keyWith("ns-before-upgrade", ["apikeys:permissions.register"]);
    expect(await register(before.clients, "legacy", "registered before ownership")).toBeUndefined();
    // The state the migration leaves a namespace registered by an older version in: no owner row.
    await t.server.ctx.db.deleteFrom("permission_namespaces").where("service", "=", "legacy").execute();
    const after = await keyWith("ns-after-upgrade", ["apikeys:permissions.register"]);
    expect(await register(after.clients, "legacy", "claimed after the upgrade")).toBeUndefined();
    expect((await register(before.clients, "legacy", "too late"))?.code).toBe(Code.PermissionDenied);
  });

  it("deleting the owning policy releases the namespace", async () => {
    const owner = await keyWith("ns-owner", ["apikeys:permissions.register"]);
    const next = await keyWith("ns-next", ["apikeys:permissions.register"]);
    expect(await register(owner.clients, "released", "first")).toBeUndefined();
    expect((await register(next.clients, "released", "second"))?.code).toBe(Code.PermissionDenied);
    await root.admin.adminDeleteApiKeyPolicy({ id: owner.policy.id });
    expect(await register(next.clients, "released", "second")).toBeUndefined();
  });

  it("two first registrations racing: exactly one owns the namespace", async () => {
    const racers = await Promise.all([0, 1, 2, 3].map((i) => keyWith(`ns-racer-${i}`, ["apikeys:permissions.register"])));
    const results = await Promise.all(racers.map((r, i) => register(r.clients, "contested", `racer ${i}`)));
    expect(results.filter((r) => r === undefined)).toHaveLength(1);
    expect(results.filter((r) => r?.code === Code.PermissionDenied)).toHaveLength(3);
  });
});
