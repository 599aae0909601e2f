import { describe, expect, it } from "vitest";
import { InventoryService } from "../examples/inventory/src/gen/inventory/v1/inventory_pb.js";
import { AuthOptionsError, assertAuthOptions, missingPermissions } from "@apikeys/client";
import { declaredPermissions, methodRequirement } from "../src/permissions/declarations.js";
import { serviceWith } from "./helpers/descriptors.js";

describe("reading the options", () => {
  it("reads the example's declarations and each method's requirement", () => {
    expect(declaredPermissions([InventoryService])).toEqual(
      new Map([
        [
          "inventory",
          [
            { name: "items.read", description: "Look up items and their stock levels." },
            { name: "items.write", description: "Change stock levels." },
          ],
        ],
      ]),
    );
    expect(methodRequirement(InventoryService.method.getItem)).toEqual({ kind: "permissions", allOf: ["inventory:items.read"], anyOf: [] });
    expect(methodRequirement(InventoryService.method.adjustStock)).toEqual({ kind: "permissions", allOf: ["inventory:items.write"], anyOf: [] });
    expect(methodRequirement(InventoryService.method.whoAmI)).toEqual({ kind: "any_key" });
  });

  it("tells public, any-key, any-of and missing options apart", () => {
    const service = serviceWith({
      declares: { service: "svc", names: ["a", "b"] },
      methods: [
        { name: "Open", auth: { public: true } },
        { name: "Any", auth: { anyKey: true } },
        { name: "Either", auth: { anyOf: ["svc:a", "svc:b"] } },
        { name: "Bare" },
      ],
    });
    expect(service.methods.map(methodRequirement)).toEqual([
      { kind: "public" },
      { kind: "any_key" },
      { kind: "permissions", allOf: [], anyOf: ["svc:a", "svc:b"] },
      { kind: "undeclared" },
    ]);
  });
});

describe("start-up check", () => {
  it("accepts consistent options", () => {
    expect(() => assertAuthOptions([InventoryService])).not.toThrow();
  });

  it("names a method requiring a permission its service never declared", () => {
    const service = serviceWith({
      declares: { service: "svc", names: ["read"] },
      methods: [{ name: "Write", auth: { allOf: ["svc:write"] } }],
    });
    expect(() => assertAuthOptions([service])).toThrow(AuthOptionsError);
    expect(() => assertAuthOptions([service])).toThrow('test.v1.TestService.Write requires "svc:write", which no service declares');
  });

  it("names a method with no auth option unless that is allowed", () => {
    const service = serviceWith({ declares: { service: "svc", names: ["read"] }, methods: [{ name: "Forgotten" }] });
    expect(() => assertAuthOptions([service])).toThrow("test.v1.TestService.Forgotten has no (apikeys.v1.auth) option");
    expect(() => assertAuthOptions([service], { allowUndeclaredMethods: true })).not.toThrow();
  });

  it("lists every problem at once, malformed names included", () => {
    const service = serviceWith({
      declares: { service: "Bad Name", names: ["ok"] },
      methods: [{ name: "M", auth: { allOf: ["no-colon"] } }, { name: "N" }],
    });
    try {
      assertAuthOptions([service]);
      expect.unreachable();
    } catch (err) {
      expect((err as AuthOptionsError).problems).toEqual([
        'permission namespace "Bad Name" must match [a-z][a-z0-9_.-]*',
        'test.v1.TestService.M requires malformed permission "no-colon"',
        "test.v1.TestService.N has no (apikeys.v1.auth) option",
      ]);
    }
  });
});

describe("missingPermissions", () => {
  const granted = new Set(["svc:a", "svc:b"]);
  it("checks all_of and any_of", () => {
    expect(missingPermissions(granted, ["svc:a"], [])).toEqual([]);
    expect(missingPermissions(granted, ["svc:a", "svc:c"], [])).toEqual(["svc:c"]);
    expect(missingPermissions(granted, [], ["svc:c", "svc:b"])).toEqual([]);
    expect(missingPermissions(granted, ["svc:d"], ["svc:c", "svc:d"])).toEqual(["svc:d", "svc:c"]);
  });
});

describe("plain declarations (services without a proto)", () => {
  it("are checked like proto options and merge with them per namespace", () => {
    const plain = { service: "inventory", permissions: [{ name: "reports.read", description: "Read reports." }] };
    expect(declaredPermissions([InventoryService, plain]).get("inventory")?.map((p) => p.name)).toEqual([
      "items.read",
      "items.write",
      "reports.read",
    ]);
    expect(() => assertAuthOptions([plain])).not.toThrow();
    try {
      assertAuthOptions([{ service: "Bad Name", permissions: [{ name: "Not Valid", description: "" }] }]);
      expect.unreachable();
    } catch (err) {
      expect((err as AuthOptionsError).problems).toEqual([
        'permission namespace "Bad Name" must match [a-z][a-z0-9_.-]*',
        'permission "Bad Name:Not Valid" has an invalid name',
      ]);
    }
  });
});
