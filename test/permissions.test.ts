import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requirePermissionNames } from "../src/permissions/permission-name.js";
import { rejection } from "./helpers/errors.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t.stop());

describe("RegisterPermissions", () => {
  it("upserts, is idempotent, and deprecates what a service stops declaring", async () => {
    const { data, admin } = clientsFor(t.baseUrl, "grpc", t.adminToken);
    const first = await data.registerPermissions({
      service: "inventory",
      permissions: [
        { name: "read", description: "Read stock" },
        { name: "inventory:write", description: "Change stock" },
      ],
    });
    expect(first.permissions.map((p) => [p.name, p.deprecated])).toEqual([
      ["inventory:read", false],
      ["inventory:write", false],
    ]);
    const again = await data.registerPermissions({
      service: "inventory",
      permissions: [
        { name: "read", description: "Read stock" },
        { name: "write", description: "Change stock" },
      ],
    });
    expect(again.permissions).toEqual(first.permissions);

    const { policy } = await admin.adminCreateApiKeyPolicy({ name: "stock", permissions: ["inventory:write"] });
    const shrunk = await data.registerPermissions({
      service: "inventory",
      permissions: [{ name: "read", description: "Read stock levels" }],
    });
    expect(shrunk.permissions.map((p) => [p.name, p.description, p.deprecated])).toEqual([
      ["inventory:read", "Read stock levels", false],
      ["inventory:write", "Change stock", true],
    ]);
    // Deprecated permissions are never silently dropped from policies.
    const policies = await admin.adminGetApiKeyPolicies({});
    expect(policies.policies.find((p) => p.id === policy!.id)?.permissions).toEqual(["inventory:write"]);

    const back = await data.registerPermissions({
      service: "inventory",
      permissions: [
        { name: "read", description: "Read stock levels" },
        { name: "write", description: "Change stock" },
      ],
    });
    expect(back.permissions.every((p) => !p.deprecated)).toBe(true);
  });

  it("lists every permission grouped and sorted by service, with descriptions", async () => {
    const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    await data.registerPermissions({ service: "zeta", permissions: [{ name: "b", description: "B" }, { name: "a", description: "A" }] });
    await data.registerPermissions({ service: "alpha", permissions: [{ name: "x", description: "X" }] });
    const { permissions } = await admin.adminGetApiKeyPermissions({});
    const names = permissions.map((p) => p.name);
    expect(names).toEqual([...names].sort((a, b) => {
      const [sa, na] = a.split(":");
      const [sb, nb] = b.split(":");
      return sa === sb ? na!.localeCompare(nb!) : sa!.localeCompare(sb!);
    }));
    expect(names.indexOf("alpha:x")).toBeLessThan(names.indexOf("zeta:a"));
    expect(permissions.find((p) => p.name === "zeta:a")).toMatchObject({ service: "zeta", description: "A", deprecated: false });
    // The service's own permissions are registered at start.
    for (const own of ["apikeys:verify", "apikeys:keys.read", "apikeys:keys.write", "apikeys:policies.write", "apikeys:permissions.register"]) {
      expect(names).toContain(own);
    }
  });

  it("refuses bad names, duplicates and the service's own namespace", async () => {
    const { data } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const cases = [
      { service: "Bad Service", permissions: [] },
      { service: "", permissions: [] },
      { service: "ok", permissions: [{ name: "Read", description: "" }] },
      { service: "ok", permissions: [{ name: "other:read", description: "" }] },
      { service: "ok", permissions: [{ name: "read", description: "" }, { name: "ok:read", description: "" }] },
      { service: "ok", permissions: [{ name: "read", description: "d".repeat(1001) }] },
    ];
    for (const req of cases) expect((await rejection(data.registerPermissions(req))).code, JSON.stringify(req).slice(0, 80)).toBe(Code.InvalidArgument);
    const own = await rejection(data.registerPermissions({ service: "apikeys", permissions: [] }));
    expect(own.code).toBe(Code.PermissionDenied);
  });
});

describe("requirePermissionNames", () => {
  it("returns a canonical list itself, and sorts and de-duplicates any other", () => {
    const canonical = ["billing:read", "billing:write", "orders:read"];
    expect(requirePermissionNames("all_of", canonical)).toBe(canonical);
    expect(requirePermissionNames("all_of", [])).toEqual([]);
    expect(requirePermissionNames("all_of", ["orders:read", "billing:read", "orders:read"])).toEqual(["billing:read", "orders:read"]);
    expect(requirePermissionNames("all_of", ["b:x", "b:x"])).toEqual(["b:x"]);
  });

  it("refuses every malformed name, also next to names it has accepted before", () => {
    requirePermissionNames("all_of", ["billing:read"]);
    const refuse = () => requirePermissionNames("any_of", ["billing:read", "Billing:read", "billing", "billing:read:x"]);
    expect(refuse).toThrow(/^any_of: malformed permission names "Billing:read", "billing", "billing:read:x"; expected/);
    expect(() => requirePermissionNames("all_of", ["billing:read", "x:" + "a".repeat(101)])).toThrow(/malformed permission name "x:a+"/);
  });
});
