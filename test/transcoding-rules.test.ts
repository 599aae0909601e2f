// The transcoder against a fixture contract that uses every HttpRule feature
// (additional_bindings, nested and multi-segment variables, `**`, body field,
// response_body, custom verbs), served by a real Connect server on a real socket.
import { type Message, create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { restHandler } from "../src/transcoding/rest-handler.js";
import { loadBookshelf } from "./helpers/bookshelf.js";

const { Bookshelf, Nested } = loadBookshelf();
const READ_MAX_BYTES = 1024;

let baseUrl: string;
let server: http.Server;
const seen: Array<{ method: string; authorization: string | null }> = [];

// Stands in for auth/logging: proves REST calls pass through the listener's interceptors.
const recorder: Interceptor = (next) => async (req) => {
  seen.push({ method: req.method.name, authorization: req.header.get("authorization") });
  const res = await next(req);
  res.header.set("x-intercepted", req.method.name);
  return res;
};

beforeAll(async () => {
  const routes = (router: ConnectRouter) =>
    router.service(Bookshelf, {
      echo: (req: Message) => req,
      special: () => create(Bookshelf.methods[0]!.output, { name: "special" }),
      fail: (req: Message & { code?: number }) => {
        const details = req.code === Code.FailedPrecondition ? [{ desc: Nested, value: { shelf: "why" } }] : [];
        throw new ConnectError("failing on purpose", req.code as Code, undefined, details);
      },
    } as never);
  const rest = restHandler({ routes, interceptors: [recorder], readMaxBytes: READ_MAX_BYTES });
  server = http.createServer(
    connectNodeAdapter({
      routes,
      interceptors: [recorder],
      fallback: (req, res) => {
        void Promise.resolve(rest(req, res)).then((answered) => {
          if (answered) return;
          res.writeHead(404);
          res.end();
        });
      },
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

async function call(method: string, path: string, init: { body?: string; contentType?: string; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { ...init.headers };
  if (init.body !== undefined) headers["content-type"] = init.contentType ?? "application/json";
  const res = await fetch(`${baseUrl}${path}`, { method, headers, body: init.body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text === "" ? undefined : (JSON.parse(text) as unknown) };
}

describe("routing and mapping", () => {
  const cases: Array<{ name: string; method: string; path: string; body?: string; want: unknown }> = [
    { name: "single variable", method: "GET", path: "/v1/echo/abc", want: { id: "abc" } },
    { name: "literal beats variable", method: "GET", path: "/v1/echo/special", want: { name: "special" } },
    { name: "single-segment variable is fully decoded", method: "GET", path: "/v1/echo/a%2Fb%20c", want: { id: "a/b c" } },
    { name: "nested path variable (additional binding)", method: "GET", path: "/v1/shelves/s1/echo/x", want: { id: "x", nested: { shelf: "s1" } } },
    { name: "multi-segment variable", method: "GET", path: "/v1/shelves/1/books/2", want: { name: "shelves/1/books/2" } },
    { name: "** keeps %2F encoded", method: "GET", path: "/v1/files/a/b%2Fc/d%20e.txt", want: { path: "a/b%2Fc/d e.txt" } },
    { name: "custom verb with body *", method: "POST", path: "/v1/echo/x:check", body: '{"name":"n","tags":["a","b"],"page_token":"p"}', want: { id: "x", name: "n", tags: ["a", "b"], pageToken: "p" } },
    { name: "path wins over body", method: "POST", path: "/v1/echo/x:check", body: '{"id":"other"}', want: { id: "x" } },
    { name: "empty body is an empty message", method: "POST", path: "/v1/echo/x:check", want: { id: "x" } },
    { name: "body field plus query", method: "PUT", path: "/v1/echo/x/nested?name=q&tags=t", body: '{"shelf":"s","depth":2}', want: { id: "x", name: "q", tags: ["t"], nested: { shelf: "s", depth: 2 } } },
    { name: "response_body", method: "GET", path: "/v1/echo/x/tags?tags=a&tags=b", want: ["a", "b"] },
    { name: "custom method kind", method: "SEARCH", path: "/v1/echo?name=s", want: { name: "s" } },
    {
      name: "query: repeated, nested, enums, 64-bit, bool, double, well-known types",
      method: "GET",
      path:
        "/v1/echo/x?tags=a&tags=b&kinds=KIND_PAPER&kinds=2&nested.depth=3&nested.counts=1&nested.counts=2&nested.child.shelf=deep" +
        "&big=9007199254740993&flag=true&ratio=0.5&timeout=1.5s&limit=7&mask=name,nested.depth&kind=KIND_EBOOK&name=a+b%26c",
      want: {
        id: "x",
        name: "a b&c",
        tags: ["a", "b"],
        kinds: ["KIND_PAPER", "KIND_EBOOK"],
        nested: { depth: 3, counts: [1, 2], child: { shelf: "deep" } },
        big: "9007199254740993",
        flag: true,
        ratio: 0.5,
        timeout: "1.500s",
        limit: 7,
        mask: "name,nested.depth",
        kind: "KIND_EBOOK",
      },
    },
    { name: "query: proto and JSON names are both accepted", method: "GET", path: "/v1/echo/x?page_token=a", want: { pageToken: "a" } },
    { name: "query: JSON name", method: "GET", path: "/v1/echo/x?pageToken=b", want: { pageToken: "b" } },
  ];
  it.each(cases)("$name", async ({ method, path, body, want }) => {
    const res = await call(method, path, body === undefined ? {} : { body });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.json).toMatchObject(want as object);
  });

  it("emits implicit defaults so REST clients see every field", async () => {
    const res = await call("GET", "/v1/echo/x");
    expect(res.json).toMatchObject({ id: "x", name: "", flag: false, big: "0", tags: [], kind: "KIND_UNSPECIFIED", labels: {} });
  });

  it("runs the listener's interceptors and forwards their response headers", async () => {
    seen.length = 0;
    const res = await call("GET", "/v1/echo/abc", { headers: { authorization: "Bearer xyz" } });
    expect(res.headers.get("x-intercepted")).toBe("Echo");
    expect(seen).toEqual([{ method: "Echo", authorization: "Bearer xyz" }]);
  });
});

describe("refusals", () => {
  const cases: Array<{ name: string; reason: string; method: string; path: string; body?: string; contentType?: string; status: number; message: RegExp; allow?: string }> = [
    { name: "unknown query parameter", reason: "UNKNOWN_FIELD", method: "GET", path: "/v1/echo/x?nope=1", status: 400, message: /unknown query parameter "nope"/ },
    { name: "unknown nested query parameter", reason: "UNKNOWN_FIELD", method: "GET", path: "/v1/echo/x?nested.nope=1", status: 400, message: /unknown query parameter "nested.nope"/ },
    { name: "query through a repeated message", reason: "UNKNOWN_FIELD", method: "GET", path: "/v1/echo/x?items.shelf=a", status: 400, message: /unknown query parameter "items.shelf"/ },
    { name: "query naming a message", reason: "INVALID_FIELD", method: "GET", path: "/v1/echo/x?nested=a", status: 400, message: /"nested" names a message field/ },
    { name: "query naming a map", reason: "INVALID_FIELD", method: "GET", path: "/v1/echo/x?labels=a", status: 400, message: /"labels" names a map field/ },
    { name: "singular field given twice", reason: "INVALID_FIELD", method: "GET", path: "/v1/echo/x?name=a&name=b", status: 400, message: /"name" is given 2 times/ },
    { name: "same field by both names", reason: "INVALID_FIELD", method: "GET", path: "/v1/echo/x?page_token=a&pageToken=b", status: 400, message: /given 2 times/ },
    { name: "bad bool", reason: "INVALID_FIELD", method: "GET", path: "/v1/echo/x?flag=maybe", status: 400, message: /query parameter "flag": expected true or false/ },
    { name: "bad int64", reason: "INVALID_FIELD", method: "GET", path: "/v1/echo/x?big=abc", status: 400, message: /query parameter "big"/ },
    { name: "bad enum", reason: "UNKNOWN_ENUM_VALUE", method: "GET", path: "/v1/echo/x?kind=KIND_NOPE", status: 400, message: /query parameter "kind"/ },
    { name: "bad duration", reason: "INVALID_FIELD", method: "GET", path: "/v1/echo/x?timeout=soon", status: 400, message: /query parameter "timeout"/ },
    { name: "query sets a path field", reason: "INVALID_FIELD", method: "GET", path: "/v1/echo/x?id=y", status: 400, message: /"id" sets a field bound by the URL path/ },
    { name: "query sets the body field", reason: "INVALID_FIELD", method: "PUT", path: "/v1/echo/x/nested?nested.depth=1", body: "{}", status: 400, message: /bound by the request body/ },
    { name: "query with body *", reason: "INVALID_FIELD", method: "POST", path: "/v1/echo/x:check?name=z", body: "{}", status: 400, message: /"name" is not allowed: the request body carries every field/ },
    { name: "malformed percent-encoding", reason: "MALFORMED_REQUEST", method: "GET", path: "/v1/echo/%ZZ", status: 400, message: /malformed percent-encoding/ },
    { name: "malformed JSON", reason: "MALFORMED_REQUEST", method: "POST", path: "/v1/echo/x:check", body: '{"name":', status: 400, message: /request body is not valid JSON/ },
    { name: "unknown body field", reason: "UNKNOWN_FIELD", method: "POST", path: "/v1/echo/x:check", body: '{"nope":1}', status: 400, message: /key "nope" is unknown/ },
    { name: "body of the wrong JSON type", reason: "MALFORMED_REQUEST", method: "POST", path: "/v1/echo/x:check", body: "[1]", status: 400, message: /invalid request body/ },
    { name: "wrong type in body", reason: "INVALID_FIELD", method: "POST", path: "/v1/echo/x:check", body: '{"big":"x"}', status: 400, message: /invalid request body/ },
    { name: "text body", reason: "UNSUPPORTED_CONTENT_TYPE", method: "POST", path: "/v1/echo/x:check", body: "name=a", contentType: "text/plain", status: 415, message: /unsupported content type "text\/plain"/ },
    { name: "non-UTF-8 charset", reason: "UNSUPPORTED_CONTENT_TYPE", method: "POST", path: "/v1/echo/x:check", body: "{}", contentType: "application/json; charset=latin1", status: 415, message: /unsupported content type/ },
    { name: "body too large", reason: "REQUEST_TOO_LARGE", method: "POST", path: "/v1/echo/x:check", body: JSON.stringify({ name: "x".repeat(READ_MAX_BYTES) }), status: 413, message: /exceeds 1024 bytes/ },
    { name: "wrong method", reason: "UNIMPLEMENTED", method: "DELETE", path: "/v1/echo/x", status: 405, message: /method DELETE not allowed/, allow: "GET, HEAD" },
    { name: "wrong method on a literal route", reason: "UNIMPLEMENTED", method: "POST", path: "/v1/echo/special", status: 405, message: /allowed: GET/, allow: "GET, HEAD" },
  ];
  it.each(cases)("$name → $status $reason", async ({ reason, method, path, body, contentType, status, message, allow }) => {
    const res = await call(method, path, body === undefined ? {} : { body, ...(contentType !== undefined && { contentType }) });
    expect(res.status).toBe(status);
    const json = res.json as { code: number; message: string; details: Array<{ "@type": string; reason?: string }> };
    expect(json.message).toMatch(message);
    expect(json.details[0]).toMatchObject({ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason, domain: "apikeys" });
    expect(typeof json.code).toBe("number");
    if (allow !== undefined) expect(res.headers.get("allow")).toBe(allow);
  });

  it("accepts application/json with charset=utf-8", async () => {
    const res = await call("POST", "/v1/echo/x:check", { body: '{"name":"é"}', contentType: "application/json; charset=UTF-8" });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ name: "é" });
  });

  it("leaves paths that match no template to the next handler", async () => {
    for (const path of ["/v1/nothing", "/v1/shelves/1/books", "/v1/echo/x/", "/v1/echo/x:unknownverb/more"]) {
      expect((await call("GET", path)).status, path).toBe(404);
    }
  });
});

describe("error mapping", () => {
  const table: Array<[Code, number]> = [
    [Code.Canceled, 499],
    [Code.Unknown, 500],
    [Code.InvalidArgument, 400],
    [Code.DeadlineExceeded, 504],
    [Code.NotFound, 404],
    [Code.AlreadyExists, 409],
    [Code.PermissionDenied, 403],
    [Code.ResourceExhausted, 429],
    [Code.FailedPrecondition, 400],
    [Code.Aborted, 409],
    [Code.OutOfRange, 400],
    [Code.Unimplemented, 501],
    [Code.Internal, 500],
    [Code.Unavailable, 503],
    [Code.DataLoss, 500],
    [Code.Unauthenticated, 401],
  ];
  it.each(table)("code %i → HTTP %i with a google.rpc.Status body", async (code, status) => {
    const res = await call("GET", `/v1/fail/${code}`);
    expect(res.status).toBe(status);
    expect(res.headers.get("content-type")).toBe("application/json");
    // A detail the handler attached is kept; every error also gets the ErrorInfo of its code.
    const own = code === Code.FailedPrecondition ? [{ "@type": "type.googleapis.com/transcoding.test.v1.Nested", shelf: "why" }] : [];
    const details = [...own, expect.objectContaining({ "@type": "type.googleapis.com/google.rpc.ErrorInfo", domain: "apikeys" })];
    expect(res.json).toMatchObject({ code, message: "failing on purpose" });
    expect((res.json as { details: unknown[] }).details).toEqual(code === Code.InvalidArgument ? [...details, expect.anything()] : details);
    expect(res.headers.get("www-authenticate")).toBe(code === Code.Unauthenticated ? "Bearer" : null);
  });
});
