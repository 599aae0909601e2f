// The OpenAPI document: generated from the contract, checked in, served, valid.
import { Validator } from "@seriousme/openapi-schema-validator";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatOpenApi, openApiFromProtoSources } from "../scripts/openapi-document.js";
import { SERVICES } from "../src/server.js";
import { httpRoutes } from "../src/transcoding/http-rules.js";
import { buildOpenApi, OPENAPI_PATH } from "../src/transcoding/openapi.js";
import { loadBookshelf } from "./helpers/bookshelf.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const checkedIn = readFileSync(OPENAPI_PATH, "utf8");
const document = JSON.parse(checkedIn) as { paths: Record<string, Record<string, any>>; components: any };

async function expectValid(doc: unknown) {
  // A copy, in case validation resolves references in place.
  const result = await new Validator().validate(structuredClone(doc) as Record<string, unknown>);
  expect(result.errors ?? []).toEqual([]);
  expect(result.valid).toBe(true);
}

describe("docs/openapi.json", () => {
  it("is up to date with the protos (run `npm run openapi` when this fails)", () => {
    expect(formatOpenApi(openApiFromProtoSources())).toBe(checkedIn);
  });

  it("is a valid OpenAPI document", async () => {
    await expectValid(document);
  });

  it("has an operation for every REST route, with proto comments as descriptions", () => {
    for (const route of httpRoutes([...SERVICES])) {
      const path = route.template.source.replace(/\{([^}=]+)(=[^}]*)?\}/g, "{$1}");
      const operation = document.paths[path]?.[route.httpMethod.toLowerCase()];
      expect(operation, `${route.httpMethod} ${path}`).toBeDefined();
      expect(operation.description, `${route.httpMethod} ${path}`).toMatch(/\S/);
    }
    expect(document.paths["/api/v1/api_keys/verify"]!.post.description).toMatch(/^Tells whether a token is valid/);
    expect(document.components.schemas["apikeys.v1.ApiKey"].properties.id.description).toBe("Server-assigned UUID.");
  });

  it("declares bearer auth, lifted for public operations", () => {
    expect(document.components.securitySchemes.bearer).toEqual(expect.objectContaining({ type: "http", scheme: "bearer" }));
    expect(document.paths["/api/v1/api_keys/healthz"]!.get.security).toEqual([]);
    expect(document.paths["/api/v1/api_keys/policies"]!.get.security).toBeUndefined();
  });

  it("maps query parameters and keeps path fields out of bodies", () => {
    const list = document.paths["/api/v1/api_keys"]!.get;
    expect(list.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`)).toEqual(expect.arrayContaining(["query:pageSize", "query:pageToken", "query:policyId"]));
    const patch = document.paths["/api/v1/api_keys/{id}"]!.patch;
    expect(patch.parameters).toEqual([expect.objectContaining({ name: "id", in: "path", required: true })]);
    expect(patch.requestBody.content["application/json"].schema.properties).not.toHaveProperty("id");
  });
});

describe("the fixture contract", () => {
  it("documents nested, repeated, multi-segment and additional bindings validly", async () => {
    const { Bookshelf } = loadBookshelf();
    const doc = buildOpenApi([Bookshelf]);
    await expectValid(doc);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(["/v1/echo/{id}", "/v1/shelves/{nested.shelf}/echo/{id}", "/v1/echo/{id}:check", "/v1/files/{path}", "/v1/{name}"]),
    );
    const params = (doc.paths["/v1/echo/{id}"]!.get as { parameters: Array<{ name: string; schema: any }> }).parameters;
    expect(params.find((p) => p.name === "tags")?.schema).toEqual({ type: "array", items: { type: "string" } });
    expect(params.map((p) => p.name)).toEqual(expect.arrayContaining(["nested.depth", "nested.child.shelf", "pageToken", "timeout", "limit"]));
    expect(params.map((p) => p.name)).not.toContain("items");
    expect((doc.paths["/v1/echo/{id}/tags"]!.get as any).responses["200"].content["application/json"].schema).toEqual({ type: "array", items: { type: "string" } });
  });
});

describe("GET /openapi.json", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("serves the checked-in document, without a key", async () => {
    const res = await fetch(`${t.baseUrl}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual(document);
  });
});
