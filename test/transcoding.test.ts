// REST over the real apikeys server: every annotated route, the documented paths,
// precedence, and error statuses, compared with the same calls over Connect.
import { toJson } from "@bufbuild/protobuf";
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminGetApiKeyResponseSchema } from "../src/gen/apikeys/v1/admin_pb.js";
import { methodRequirement } from "../src/permissions/declarations.js";
import { SERVICES } from "../src/server.js";
import { httpRoutes } from "../src/transcoding/http-rules.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;

beforeAll(async () => {
  t = await startTestServer();
});

afterAll(async () => {
  await t?.stop();
});

interface RestResult {
  status: number;
  headers: Headers;
  json: any;
}

async function rest(method: string, path: string, options: { token?: string | null; body?: unknown; headers?: Record<string, string>; baseUrl?: string } = {}): Promise<RestResult> {
  const headers: Record<string, string> = { ...options.headers };
  const token = options.token === undefined ? t.adminToken : options.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["content-type"] ??= "application/json";
    body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
  }
  const res = await fetch(`${options.baseUrl ?? t.baseUrl}${path}`, { method, headers, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text === "" ? undefined : JSON.parse(text) };
}

const UUID = "00000000-0000-4000-8000-000000000000";

describe("every annotated RPC is reachable over REST", () => {
  const routes = httpRoutes([...SERVICES]).map((r) => {
    let path = "";
    for (let i = 0; i < r.template.segments.length; i++) {
      const variable = r.template.variables.find((v) => v.start === i);
      if (variable !== undefined) {
        path += `/${UUID}`;
        i = (variable.end ?? r.template.segments.length) - 1;
      } else {
        const s = r.template.segments[i]!;
        path += `/${s.kind === "literal" ? s.value : UUID}`;
      }
    }
    if (r.template.verb !== undefined) path += `:${r.template.verb}`;
    return { rpc: `${r.method.parent.name}.${r.method.name}`, httpMethod: r.httpMethod, path, body: r.body !== undefined, requirement: methodRequirement(r.method).kind };
  });

  it("has routes for every documented path", () => {
    const bindings = routes.map((r) => `${r.httpMethod} ${r.path.replaceAll(UUID, "{id}")}`);
    for (const documented of [
      "GET /api/v1/api_keys/policies",
      "GET /api/v1/api_keys/permissions",
      "GET /api/v1/api_keys",
      "POST /api/v1/api_keys",
      "GET /api/v1/api_keys/{id}",
      "PATCH /api/v1/api_keys/{id}",
      "DELETE /api/v1/api_keys/{id}",
      "POST /api/v1/api_keys/{id}:rotate",
      "POST /api/v1/api_keys/policies",
      "PATCH /api/v1/api_keys/policies/{id}",
      "DELETE /api/v1/api_keys/policies/{id}",
      "POST /api/v1/api_keys/verify",
      "POST /api/v1/api_keys/permissions:register",
      "GET /api/v1/api_keys/test",
      "GET /api/v1/api_keys/healthz",
    ]) {
      expect(bindings).toContain(documented);
    }
  });

  // Without a key, a protected route answers 401 from the auth interceptor, which
  // proves the request reached that RPC's handler chain (not a 404/405).
  it.each(routes)("$httpMethod $path → $rpc", async ({ httpMethod, path, body, requirement }) => {
    const res = await rest(httpMethod, path, { token: null, ...(body && { body: {} }) });
    if (requirement === "public") expect([200, 400]).toContain(res.status);
    else expect(res.status).toBe(401);
    expect(res.headers.get("content-type")).toBe("application/json");
  });
});

describe("the curl walk-through", () => {
  it("creates a policy and a key, verifies, rotates and deletes over REST only", async () => {
    const permissions = await rest("GET", "/api/v1/api_keys/permissions");
    expect(permissions.status).toBe(200);
    expect(permissions.json.permissions.map((p: { name: string }) => p.name)).toContain("apikeys:verify");

    const created = await rest("POST", "/api/v1/api_keys/policies", { body: { name: "rest-verifiers", description: "verify only", permissions: ["apikeys:verify"] } });
    expect(created.status).toBe(200);
    const policy = created.json.policy;
    expect(policy).toMatchObject({ name: "rest-verifiers", permissions: ["apikeys:verify"] });

    const listed = await rest("GET", "/api/v1/api_keys/policies");
    expect(listed.json.policies.map((p: { id: string }) => p.id)).toContain(policy.id);

    const key = await rest("POST", "/api/v1/api_keys", { body: { name: "rest-key", policy_id: policy.id } });
    expect(key.status).toBe(200);
    const { apiKey, token } = key.json;
    expect(token).toMatch(/^ak_/);

    // The same key read over REST and over Connect: identical proto3 JSON.
    const got = await rest("GET", `/api/v1/api_keys/${apiKey.id}`);
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const viaConnect = await admin.adminGetApiKey({ id: apiKey.id });
    expect(got.json).toEqual(toJson(AdminGetApiKeyResponseSchema, viaConnect, { alwaysEmitImplicit: true }));
    expect(JSON.stringify(got.json)).not.toContain(token);

    const page = await rest("GET", `/api/v1/api_keys?policy_id=${policy.id}&page_size=10`);
    expect(page.json.apiKeys.map((k: { id: string }) => k.id)).toEqual([apiKey.id]);
    const pageByJsonNames = await rest("GET", `/api/v1/api_keys?policyId=${policy.id}&pageSize=10`);
    expect(pageByJsonNames.json).toEqual(page.json);

    const tested = await rest("GET", "/api/v1/api_keys/test", { token: null, headers: { "x-api-key": token } });
    expect(tested.status).toBe(200);
    expect(tested.json.apiKey.id).toBe(apiKey.id);

    const verified = await rest("POST", "/api/v1/api_keys/verify", { token, body: { token, allOf: ["apikeys:verify"] } });
    expect(verified.json).toMatchObject({ valid: true, code: "VERIFY_CODE_VALID", missing: [] });
    const refused = await rest("POST", "/api/v1/api_keys/verify", { token, body: { token, all_of: ["apikeys:keys.read"] } });
    expect(refused.status).toBe(200);
    expect(refused.json).toMatchObject({ valid: false, code: "VERIFY_CODE_INSUFFICIENT_PERMISSIONS", missing: ["apikeys:keys.read"] });

    const renamed = await rest("PATCH", `/api/v1/api_keys/${apiKey.id}`, { body: { name: "rest-key-2" } });
    expect(renamed.json.apiKey.name).toBe("rest-key-2");

    const rotated = await rest("POST", `/api/v1/api_keys/${apiKey.id}:rotate`, { body: { gracePeriod: "60s" } });
    expect(rotated.status).toBe(200);
    expect(rotated.json.token).not.toBe(token);
    const oldStillValid = await rest("POST", "/api/v1/api_keys/verify", { token: rotated.json.token, body: { token } });
    expect(oldStillValid.json.valid).toBe(true);

    const patchedPolicy = await rest("PATCH", `/api/v1/api_keys/policies/${policy.id}`, { body: { description: "changed" } });
    expect(patchedPolicy.json.policy.description).toBe("changed");

    const deleted = await rest("DELETE", `/api/v1/api_keys/${apiKey.id}`);
    expect(deleted.json.apiKeyDeleted.id).toBe(apiKey.id);
    const gone = await rest("GET", `/api/v1/api_keys/${apiKey.id}`);
    expect(gone.status).toBe(404);
    expect(gone.json).toEqual({ code: 5, message: expect.any(String), details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "NOT_FOUND", domain: "apikeys" }] });

    const deletedPolicy = await rest("DELETE", `/api/v1/api_keys/policies/${policy.id}`);
    expect(deletedPolicy.json).toMatchObject({ policyDeleted: { id: policy.id }, apiKeysDeleted: 0 });

    const health = await rest("GET", "/api/v1/api_keys/healthz", { token: null });
    expect(health.json.healthy).toBe(true);
  });
});

describe("precedence", () => {
  it("serves the literal /policies and /permissions before /{id}", async () => {
    expect((await rest("GET", "/api/v1/api_keys/policies")).json).toHaveProperty("policies");
    expect((await rest("GET", "/api/v1/api_keys/permissions")).json).toHaveProperty("permissions");
    const byId = await rest("GET", `/api/v1/api_keys/${UUID}`);
    expect(byId.status).toBe(404);
  });

  it("answers a method the literal route lacks with 405, never by taking the literal as an id", async () => {
    // Regression: DELETE /policies and GET /verify were served by /api/v1/api_keys/{id}, answering "id must be a UUID".
    const res = await rest("DELETE", "/api/v1/api_keys/policies");
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("GET, HEAD, POST");
    const verb = await rest("GET", "/api/v1/api_keys/verify");
    expect(verb.status).toBe(405);
    expect(verb.headers.get("allow")).toBe("POST");
    expect(verb.json.message).toBe("method GET not allowed on /api/v1/api_keys/verify; allowed: POST");
  });

  it("answers 405 with Allow when no route has the method", async () => {
    const res = await rest("PUT", "/api/v1/api_keys/policies");
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("GET, HEAD, POST");
    const put = await rest("PUT", `/api/v1/api_keys/${UUID}`);
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("DELETE, GET, HEAD, PATCH");
  });
});

describe("errors carry the HTTP status of their code and a google.rpc.Status", () => {
  it("401 without a key or with a bad one", async () => {
    for (const token of [null, "ak_not-a-real-token"]) {
      const res = await rest("GET", "/api/v1/api_keys/policies", { token });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe("Bearer");
      expect(res.json).toEqual({
        code: 16,
        message: expect.any(String),
        details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: token === null ? "API_KEY_MISSING" : "API_KEY_INVALID", domain: "apikeys" }],
      });
    }
  });

  it("403 naming the missing permission", async () => {
    const policy = (await rest("POST", "/api/v1/api_keys/policies", { body: { name: "rest-403", permissions: ["apikeys:verify"] } })).json.policy;
    const { token } = (await rest("POST", "/api/v1/api_keys", { body: { name: "rest-403-key", policyId: policy.id } })).json;
    const res = await rest("GET", "/api/v1/api_keys/policies", { token });
    expect(res.status).toBe(403);
    expect(res.json).toEqual({
      code: 7,
      message: expect.stringContaining("apikeys:policies.read"),
      details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "PERMISSION_MISSING", domain: "apikeys", metadata: { permissions: "apikeys:policies.read" } }],
    });
  });

  it("409 on a duplicate name, 404 on an unknown id, 400 on invalid input", async () => {
    await rest("POST", "/api/v1/api_keys/policies", { body: { name: "rest-dup" } });
    const dup = await rest("POST", "/api/v1/api_keys/policies", { body: { name: "rest-dup" } });
    expect(dup.status).toBe(409);
    expect(dup.json.code).toBe(6);

    const missing = await rest("PATCH", `/api/v1/api_keys/policies/${UUID}`, { body: { description: "x" } });
    expect(missing.status).toBe(404);
    expect(missing.json.code).toBe(5);

    const invalid = await rest("POST", "/api/v1/api_keys/policies", { body: { name: "" } });
    expect(invalid.status).toBe(400);
    expect(invalid.json.code).toBe(3);
  });

  it("400 for unknown query parameters, malformed JSON and unknown fields; 415 for other bodies", async () => {
    const unknownParam = await rest("GET", "/api/v1/api_keys?colour=red");
    expect(unknownParam.status).toBe(400);
    expect(unknownParam.json.message).toBe('unknown query parameter "colour"');

    const badJson = await rest("POST", "/api/v1/api_keys/policies", { body: "{" });
    expect(badJson.status).toBe(400);
    expect(badJson.json.message).toMatch(/not valid JSON/);

    const unknownField = await rest("POST", "/api/v1/api_keys/policies", { body: { name: "x", colour: "red" } });
    expect(unknownField.status).toBe(400);
    expect(unknownField.json.message).toMatch(/"colour" is unknown/);

    const form = await rest("POST", "/api/v1/api_keys/policies", { body: "name=x", headers: { "content-type": "application/x-www-form-urlencoded" } });
    expect(form.status).toBe(415);
  });

  it("keeps the 404 JSON of the server for paths that are no route", async () => {
    const res = await rest("GET", "/api/v2/nothing");
    expect(res.status).toBe(404);
    expect(res.json.code).toBe(5);
  });
});

describe("HTTP/2", () => {
  it("serves REST over cleartext HTTP/2 (prior knowledge) too", async () => {
    const session = http2.connect(t.baseUrl);
    try {
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ":method": "GET", ":path": "/api/v1/api_keys/policies", authorization: `Bearer ${t.adminToken}` });
        let status = 0;
        let body = "";
        stream.on("response", (headers) => (status = Number(headers[":status"])));
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => (body += chunk));
        stream.on("end", () => resolve({ status, body }));
        stream.on("error", reject);
      });
      expect(status).toBe(200);
      expect(JSON.parse(body).policies.map((p: { name: string }) => p.name)).toContain("apikeys-admin");
    } finally {
      session.close();
    }
  });
});

describe("plain-HTTP probes", () => {
  it("GET /healthz and /readyz answer without a key", async () => {
    expect(await rest("GET", "/healthz", { token: null })).toMatchObject({ status: 200, json: { status: "ok" } });
    expect(await rest("GET", "/readyz", { token: null })).toMatchObject({ status: 200, json: { status: "ready" } });
    const post = await rest("POST", "/readyz", { token: null });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });
});

describe("with ADMIN_PORT", () => {
  let split: TestServer;
  beforeAll(async () => {
    split = await startTestServer({ ADMIN_PORT: "0", ADMIN_HOST: "127.0.0.1" });
  });
  afterAll(async () => {
    await split?.stop();
  });

  it("serves admin REST routes only on the admin port, data routes only on the data port", async () => {
    const token = split.adminToken;
    expect((await rest("GET", "/api/v1/api_keys/policies", { token, baseUrl: split.adminBaseUrl })).status).toBe(200);
    expect((await rest("GET", "/api/v1/api_keys/policies", { token, baseUrl: split.baseUrl })).status).toBe(404);
    expect((await rest("POST", "/api/v1/api_keys/verify", { token, baseUrl: split.baseUrl, body: { token } })).json.valid).toBe(true);
    // On the admin port the path only matches /api/v1/api_keys/{id}, which has no POST.
    const verifyOnAdmin = await rest("POST", "/api/v1/api_keys/verify", { token, baseUrl: split.adminBaseUrl, body: { token } });
    expect(verifyOnAdmin.status).toBe(405);
    expect(verifyOnAdmin.headers.get("allow")).toBe("DELETE, GET, HEAD, PATCH");
  });

  it("documents only the listener's own operations in /openapi.json", async () => {
    const data = await rest("GET", "/openapi.json", { token: null, baseUrl: split.baseUrl });
    const admin = await rest("GET", "/openapi.json", { token: null, baseUrl: split.adminBaseUrl });
    const tags = (doc: any) => new Set(Object.values(doc.paths).flatMap((ops: any) => Object.values(ops).flatMap((op: any) => op.tags)));
    expect(tags(data.json)).toEqual(new Set(["ApiKeysService"]));
    expect(tags(admin.json)).toEqual(new Set(["ApiKeysAdminService"]));
  });
});
