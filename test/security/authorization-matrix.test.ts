import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { declaredPermissions, methodRequirement } from "../../src/permissions/declarations.js";
import { SERVICES } from "../../src/server.js";
import { allMethods, callAny, restCalls } from "../helpers/rpc.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer, transportFor } from "../helpers/server.js";

/*
 * Every method that needs a key, driven by its (apikeys.v1.auth) option, so a new
 * admin RPC joins the matrix by being declared. Callers: no token, a garbage
 * token, a valid key of a policy outside the apikeys namespace, a key holding
 * every apikeys permission except exactly the ones the method needs, and an
 * admin key. Throttling is off here: the matrix sends many bad tokens on purpose.
 */

const CALLERS = ["none", "garbage", "outsider", "lacking", "admin"] as const;
type Caller = (typeof CALLERS)[number];

const guarded = allMethods().filter(({ method }) => {
  const kind = methodRequirement(method).kind;
  return kind === "permissions" || kind === "any_key";
});

let t: TestServer;
let outsiderToken: string;
/** Per method: a token whose policy lacks exactly that method's permissions. */
const lackingTokens = new Map<string, string>();

beforeAll(async () => {
  t = await startTestServer({ APIKEYS_AUTH_FAILURE_LIMIT: "0" });
  const { admin, data } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "matrix", permissions: [{ name: "read", description: "matrix test" }] });
  const outsider = await admin.adminCreateApiKeyPolicy({ name: "outsider", permissions: ["matrix:read"] });
  outsiderToken = (await admin.adminCreateApiKey({ name: "outsider", policyId: outsider.policy!.id })).token;

  const own = (declaredPermissions([...SERVICES]).get("apikeys") ?? []).map((p) => `apikeys:${p.name}`);
  const byRequirement = new Map<string, string>();
  for (const { method } of guarded) {
    const requirement = methodRequirement(method);
    if (requirement.kind !== "permissions") continue;
    const needed = [...requirement.allOf, ...requirement.anyOf].sort();
    const signature = needed.join(",");
    let token = byRequirement.get(signature);
    if (token === undefined) {
      const name = `lacking-${byRequirement.size}`;
      const policy = await admin.adminCreateApiKeyPolicy({ name, permissions: own.filter((p) => !needed.includes(p)) });
      token = (await admin.adminCreateApiKey({ name, policyId: policy.policy!.id })).token;
      byRequirement.set(signature, token);
    }
    lackingTokens.set(method.name, token);
  }
});
afterAll(() => t.stop());

function tokenOf(caller: Caller, methodName: string): string | undefined {
  switch (caller) {
    case "none":
      return undefined;
    case "garbage":
      return "not-a-token";
    case "outsider":
      return outsiderToken;
    case "lacking":
      // A method open to any key needs no permission to lack: any valid key will do.
      return lackingTokens.get(methodName) ?? outsiderToken;
    case "admin":
      return t.adminToken;
  }
}

/** The outcome each caller must get: 401/403 by name, or "authorized" (anything the handler itself may answer). */
function expected(caller: Caller, anyKey: boolean): "unauthenticated" | "permission_denied" | "authorized" {
  if (caller === "none" || caller === "garbage") return "unauthenticated";
  if (caller === "admin" || anyKey) return "authorized";
  return "permission_denied";
}

function classify(code: "ok" | number): "unauthenticated" | "permission_denied" | "authorized" | "server_error" {
  if (code === Code.Unauthenticated) return "unauthenticated";
  if (code === Code.PermissionDenied) return "permission_denied";
  if (code === Code.Internal || code === Code.Unknown) return "server_error";
  return "authorized";
}

function restClassify(status: number): ReturnType<typeof classify> {
  if (status === 401) return "unauthenticated";
  if (status === 403) return "permission_denied";
  if (status >= 500 && status !== 503) return "server_error";
  return "authorized";
}

it("covers every guarded method, admin and data plane", () => {
  const names = guarded.map(({ method }) => method.name);
  expect(names).toEqual(expect.arrayContaining(["AdminCreateApiKey", "AdminDeleteApiKeyPolicy", "VerifyToken", "TestApiKey"]));
  expect(names.length).toBeGreaterThanOrEqual(15);
});

describe.each(PROTOCOLS)("over %s", (protocol) => {
  it.each(CALLERS)("answers every guarded method as expected for caller %s", async (caller) => {
    const transport = transportFor(t.baseUrl, protocol);
    const got: Record<string, string> = {};
    const want: Record<string, string> = {};
    for (const { service, method } of guarded) {
      const token = tokenOf(caller, method.name);
      const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
      got[method.name] = classify(await callAny(transport, service, method, headers));
      want[method.name] = expected(caller, methodRequirement(method).kind === "any_key");
    }
    expect(got).toEqual(want);
  });
});

describe("over REST", () => {
  const bound = guarded.filter(({ method }) => restCalls(method).length > 0);

  it("binds most guarded methods", () => {
    expect(bound.length).toBeGreaterThanOrEqual(10);
  });

  it.each(CALLERS)("answers every bound route as expected for caller %s", async (caller) => {
    const got: Record<string, string> = {};
    const want: Record<string, string> = {};
    for (const { method } of bound) {
      const token = tokenOf(caller, method.name);
      for (const call of restCalls(method)) {
        const res = await fetch(`${t.baseUrl}${call.path}`, {
          method: call.httpMethod,
          headers: {
            ...(token !== undefined && { authorization: `Bearer ${token}` }),
            ...(call.hasBody && { "content-type": "application/json" }),
          },
          body: call.hasBody ? "{}" : undefined,
        });
        await res.arrayBuffer();
        const label = `${call.httpMethod} ${call.path.replace(/[0-9a-f-]{36}/g, "{id}")}`;
        got[label] = restClassify(res.status);
        want[label] = expected(caller, methodRequirement(method).kind === "any_key");
      }
    }
    expect(got).toEqual(want);
  });
});
