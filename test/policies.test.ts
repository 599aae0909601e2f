import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codeOf } from "./helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
  const { data } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({
    service: "accounts",
    permissions: [
      { name: "read", description: "Read accounts" },
      { name: "delete_account", description: "Delete an account" },
      { name: "write", description: "Write accounts" },
    ],
  });
});
afterAll(() => t.stop());

describe.each(PROTOCOLS)("policies over %s", (protocol) => {
  const client = () => clientsFor(t.baseUrl, protocol, t.adminToken).admin;

  it("creates, lists, updates and deletes a policy", async () => {
    const admin = client();
    const { policy } = await admin.adminCreateApiKeyPolicy({
      name: `readers-${protocol}`,
      description: "read only",
      permissions: ["accounts:read", "accounts:read"],
    });
    expect(policy?.permissions).toEqual(["accounts:read"]);
    expect(policy?.id).toMatch(/^[0-9a-f-]{36}$/);

    const listed = await admin.adminGetApiKeyPolicies({});
    expect(listed.policies.map((p) => p.name)).toContain(`readers-${protocol}`);

    const updated = await admin.adminUpdateApiKeyPolicy({
      id: policy!.id,
      permissions: ["accounts:write", "accounts:delete_account"],
    });
    expect(updated.policy?.permissions).toEqual(["accounts:delete_account", "accounts:write"]);
    expect(updated.policy?.description).toBe("read only");

    const renamed = await admin.adminUpdateApiKeyPolicy({ id: policy!.id, name: `writers-${protocol}` });
    expect(renamed.policy?.name).toBe(`writers-${protocol}`);
    expect(renamed.policy?.permissions).toEqual(["accounts:delete_account", "accounts:write"]);

    const cleared = await admin.adminUpdateApiKeyPolicy({ id: policy!.id, permissions: [], updateMask: { paths: ["permissions"] } });
    expect(cleared.policy?.permissions).toEqual([]);

    const deleted = await admin.adminDeleteApiKeyPolicy({ id: policy!.id });
    expect(deleted.policyDeleted?.id).toBe(policy!.id);
    expect(deleted.apiKeysDeleted).toBe(0);
    expect(await codeOf(admin.adminDeleteApiKeyPolicy({ id: policy!.id }))).toBe(Code.NotFound);
  });

  it("refuses a duplicate name with already_exists", async () => {
    const admin = client();
    await admin.adminCreateApiKeyPolicy({ name: `dup-${protocol}`, permissions: [] });
    const err = await admin.adminCreateApiKeyPolicy({ name: `dup-${protocol}`, permissions: [] }).catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.AlreadyExists);
    expect((err as ConnectError).rawMessage).toMatch(/policy with this name already exists/);
  });

  it("refuses undeclared permissions, naming them", async () => {
    const err = await client()
      .adminCreateApiKeyPolicy({ name: `bad-${protocol}`, permissions: ["accounts:read", "accounts:fly", "billing:pay"] })
      .catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toContain("accounts:fly");
    expect((err as ConnectError).rawMessage).toContain("billing:pay");
    expect((err as ConnectError).rawMessage).not.toContain("accounts:read,");
    const listed = await client().adminGetApiKeyPolicies({});
    expect(listed.policies.map((p) => p.name)).not.toContain(`bad-${protocol}`);
  });

  it("refuses malformed input with invalid_argument", async () => {
    const admin = client();
    expect(await codeOf(admin.adminCreateApiKeyPolicy({ name: "", permissions: [] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin.adminCreateApiKeyPolicy({ name: "x", permissions: ["NoColon"] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin.adminCreateApiKeyPolicy({ name: "a".repeat(201), permissions: [] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin.adminUpdateApiKeyPolicy({ id: "nope", name: "y" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin.adminUpdateApiKeyPolicy({ id: crypto.randomUUID(), name: "y" }))).toBe(Code.NotFound);
    expect(await codeOf(admin.adminUpdateApiKeyPolicy({ id: crypto.randomUUID() }))).toBe(Code.InvalidArgument);
    expect(
      await codeOf(admin.adminUpdateApiKeyPolicy({ id: crypto.randomUUID(), name: "y", updateMask: { paths: ["owner"] } })),
    ).toBe(Code.InvalidArgument);
    expect(await codeOf(admin.adminDeleteApiKeyPolicy({ id: "" }))).toBe(Code.InvalidArgument);
  });

  it("deletes a policy's keys with it and says how many", async () => {
    const admin = client();
    const { policy } = await admin.adminCreateApiKeyPolicy({ name: `cascade-${protocol}`, permissions: ["accounts:read"] });
    const tokens: string[] = [];
    for (let i = 0; i < 3; i++) {
      const created = await admin.adminCreateApiKey({ name: `cascade-${protocol}-${i}`, policyId: policy!.id });
      tokens.push(created.token);
    }
    const { data } = clientsFor(t.baseUrl, protocol, t.adminToken);
    expect((await data.verifyToken({ token: tokens[0]! })).valid).toBe(true);

    const deleted = await admin.adminDeleteApiKeyPolicy({ id: policy!.id });
    expect(deleted.apiKeysDeleted).toBe(3);
    const keys = await admin.adminGetApiKeys({ policyId: policy!.id });
    expect(keys.apiKeys).toHaveLength(0);
    for (const token of tokens) {
      const verdict = await data.verifyToken({ token });
      expect(verdict.valid).toBe(false);
    }
  });
});
