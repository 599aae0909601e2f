import { execFile } from "node:child_process";
import http from "node:http";
import http2 from "node:http2";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import * as grpc from "@grpc/grpc-js";
import { MISSING_KEY } from "@apikeys/client";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.js";
import { type MessageInitShape, create, fromBinary, toBinary, toJsonString } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ApiKeysService,
  TestApiKeyRequestSchema,
  VerifyCode,
  type VerifyTokenRequest,
  VerifyTokenRequestSchema,
  VerifyTokenResponseSchema,
} from "../src/gen/apikeys/v1/api_keys_pb.js";
import { readConfig } from "../src/config.js";
import { type Listener, listen } from "../src/http/listener.js";
import { adminExtras, adminRoutes, dataRoutes, planeHandler } from "../src/routes/planes.js";
import { generateToken } from "../src/tokens/token.js";
import { envelope } from "./helpers/raw.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

/*
 * Differential tests of the fast path (src/http/fast-path/): every request of the
 * corpus goes to the server (fast path on, the default) and to a second listener on
 * the same app context (so the same database, cache and keys) with the fast path off,
 * and the two answers must be equal byte for byte: status, headers but `date`,
 * trailers, body. The fast path's own counter says which requests it answered, so a
 * case that should take it cannot silently fall through (and the reverse).
 */

let t: TestServer;
let off: Listener;
let verifierToken: string;
let adminToken: string;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  t = await startTestServer({ APIKEYS_AUTH_FAILURE_LIMIT: "0" });
  adminToken = t.adminToken;
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "billing", permissions: [{ name: "read", description: "" }, { name: "refund", description: "" }] });
  const policy = (await admin.adminCreateApiKeyPolicy({ name: "billing-reader", permissions: ["billing:read"] })).policy!;
  const verifierPolicy = (await admin.adminCreateApiKeyPolicy({ name: "verifier", permissions: ["apikeys:verify"] })).policy!;
  verifierToken = (await admin.adminCreateApiKey({ name: "gateway", policyId: verifierPolicy.id })).token;
  tokens.valid = (await admin.adminCreateApiKey({ name: "caller", policyId: policy.id, environment: { tier: "gold", shard: 3, beta: true } })).token;
  const disabled = await admin.adminCreateApiKey({ name: "disabled", policyId: policy.id });
  await admin.adminUpdateApiKey({ id: disabled.apiKey!.id, enabled: false, updateMask: { paths: ["enabled"] } });
  tokens.disabled = disabled.token;
  tokens.expired = (await admin.adminCreateApiKey({ name: "expiring", policyId: policy.id, expiresOn: { seconds: BigInt(Math.floor(Date.now() / 1000) + 2), nanos: 0 } })).token;
  // An answer over 1 KiB, which connect compresses for a client that accepts gzip.
  tokens.large = (await admin.adminCreateApiKey({ name: "large", policyId: policy.id, description: "d".repeat(1500) })).token;
  tokens.cidr = (await admin.adminCreateApiKey({ name: "office", policyId: policy.id, allowedCidrs: ["10.0.0.0/8"] })).token;
  tokens.limited = (await admin.adminCreateApiKey({ name: "limited", policyId: policy.id, rateLimit: { requests: 1, period: { seconds: 3600n, nanos: 0 } } })).token;
  // Use up the limited key's one request; every call below is refused alike.
  await data.verifyToken({ token: tokens.limited });
  const app = t.server.ctx;
  const offCtx = { ...app, limits: { ...app.limits, fastPath: false } };
  const limits = readConfig({}).http.limits;
  off = await listen(planeHandler(offCtx, (r) => (dataRoutes(offCtx)(r), adminRoutes(offCtx)(r)), adminExtras(offCtx)), 0, "127.0.0.1", limits);
  // The expiring key has expired by now.
  await new Promise((resolve) => setTimeout(resolve, 2_100));
});
afterAll(async () => {
  for (const s of sessions.values()) s.close();
  await off?.close(0);
  await t?.stop();
});

interface Case {
  name: string;
  transport: "h1" | "h2";
  method?: string;
  path: string;
  headers: Record<string, string>;
  body: Uint8Array;
  /** Whether the fast path answers it itself. */
  fast: boolean;
}

interface Answer {
  status: number;
  headers: Array<[string, string]>;
  trailers: Array<[string, string]>;
  body: string;
}

const sessions = new Map<number, http2.ClientHttp2Session>();
const agents = new Map<number, http.Agent>();

function send(port: number, c: Case): Promise<Answer> {
  return c.transport === "h2" ? sendH2(port, c) : sendH1(port, c);
}

function sendH2(port: number, c: Case): Promise<Answer> {
  let session = sessions.get(port);
  if (session === undefined || session.closed || session.destroyed) {
    session = http2.connect(`http://127.0.0.1:${port}`);
    sessions.set(port, session);
  }
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": c.method ?? "POST", ":path": c.path, ...c.headers }, { endStream: false });
    const chunks: Buffer[] = [];
    let answer: Omit<Answer, "body"> = { status: 0, headers: [], trailers: [] };
    const list = (h: http2.IncomingHttpHeaders) =>
      Object.entries(h)
        .filter(([k]) => k !== "date" && k !== ":status")
        .map(([k, v]) => [k, String(v)] as [string, string])
        .sort();
    stream.on("response", (h) => (answer = { ...answer, status: Number(h[":status"]), headers: list(h) }));
    stream.on("trailers", (h) => (answer = { ...answer, trailers: list(h) }));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => resolve({ ...answer, body: Buffer.concat(chunks).toString("hex") }));
    stream.on("error", reject);
    stream.end(c.method === "GET" ? undefined : c.body);
  });
}

function sendH1(port: number, c: Case): Promise<Answer> {
  let agent = agents.get(port);
  if (agent === undefined) agents.set(port, (agent = new http.Agent({ keepAlive: true, maxSockets: 1 })));
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method: c.method ?? "POST", path: c.path, headers: { ...c.headers, "content-length": String(c.body.length) }, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        const headers: Array<[string, string]> = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) if (res.rawHeaders[i]!.toLowerCase() !== "date") headers.push([res.rawHeaders[i]!, res.rawHeaders[i + 1]!]);
        resolve({ status: res.statusCode ?? 0, headers, trailers: Object.entries(res.trailers).map(([k, v]) => [k, String(v)]), body: Buffer.concat(chunks).toString("hex") });
      });
    });
    req.on("error", reject);
    req.end(c.body);
  });
}

type Variant = { name: string; transport: "h1" | "h2"; contentType: string; grpc: boolean; extra?: Record<string, string> };

const VARIANTS: Variant[] = [
  { name: "gRPC application/grpc", transport: "h2", contentType: "application/grpc", grpc: true, extra: { te: "trailers" } },
  { name: "gRPC +proto (grpc-js headers)", transport: "h2", contentType: "application/grpc+proto", grpc: true, extra: { te: "trailers", "grpc-accept-encoding": "identity,deflate,gzip", "user-agent": "grpc-node-js/1.12" } },
  { name: "Connect proto HTTP/1.1", transport: "h1", contentType: "application/proto", grpc: false, extra: { "connect-protocol-version": "1" } },
  { name: "Connect JSON HTTP/1.1", transport: "h1", contentType: "application/json", grpc: false, extra: { "accept-encoding": "gzip, deflate, br" } },
  { name: "Connect proto h2", transport: "h2", contentType: "application/proto", grpc: false },
  { name: "Connect JSON h2", transport: "h2", contentType: "application/json", grpc: false, extra: { "connect-protocol-version": "1" } },
];

const VERIFY = `/${ApiKeysService.typeName}/VerifyToken`;
const TEST = `/${ApiKeysService.typeName}/TestApiKey`;

function verifyBody(v: Variant, req: MessageInitShape<typeof VerifyTokenRequestSchema>): Uint8Array {
  const message = create(VerifyTokenRequestSchema, req);
  if (v.grpc) return envelope(toBinary(VerifyTokenRequestSchema, message));
  return v.contentType === "application/json" ? Buffer.from(toJsonString(VerifyTokenRequestSchema, message)) : toBinary(VerifyTokenRequestSchema, message);
}

function testBody(v: Variant): Uint8Array {
  const bytes = toBinary(TestApiKeyRequestSchema, create(TestApiKeyRequestSchema, {}));
  if (v.grpc) return envelope(bytes);
  return v.contentType === "application/json" ? Buffer.from("{}") : bytes;
}

/** The corpus, built once the keys exist. */
function corpus(): Case[] {
  const cases: Case[] = [];
  for (const v of VARIANTS) {
    const base = (name: string, headers: Record<string, string>, body: Uint8Array, fast: boolean, path = VERIFY): Case => ({
      name: `${v.name}: ${name}`,
      transport: v.transport,
      path,
      headers: { "content-type": v.contentType, ...v.extra, ...headers },
      body,
      fast,
    });
    const caller = { authorization: `Bearer ${verifierToken}` };
    const verify = (name: string, req: MessageInitShape<typeof VerifyTokenRequestSchema>, headers: Record<string, string> = caller, fast = true) => cases.push(base(name, headers, verifyBody(v, req), fast));
    verify("valid", { token: tokens.valid!, allOf: ["billing:read"] });
    verify("valid, no requirement", { token: tokens.valid! });
    verify("valid, an answer over 1 KiB", { token: tokens.large! });
    verify("valid, caller key as x-api-key", { token: tokens.valid! }, { "x-api-key": verifierToken });
    verify("valid, any_of", { token: tokens.valid!, anyOf: ["billing:refund", "billing:read"] });
    verify("insufficient permissions", { token: tokens.valid!, allOf: ["billing:read", "billing:refund"] });
    verify("unknown token", { token: generateToken("ak") });
    verify("malformed token", { token: "garbage" });
    verify("disabled", { token: tokens.disabled! });
    verify("expired", { token: tokens.expired! });
    verify("ip not allowed", { token: tokens.cidr!, clientIp: "127.0.0.1" });
    verify("ip allowed", { token: tokens.cidr!, clientIp: "10.1.2.3" });
    verify("rate limited", { token: tokens.limited! });
    verify("invalid client_ip", { token: tokens.valid!, clientIp: "not-an-ip" });
    verify("invalid permission name", { token: tokens.valid!, allOf: ["Not A Permission"] });
    verify("missing caller key", { token: tokens.valid! }, {});
    verify("garbage caller key", { token: tokens.valid! }, { authorization: "Bearer nope" });
    verify("malformed authorization", { token: tokens.valid! }, { authorization: "Basic abc" });
    verify("caller lacks apikeys:verify", { token: tokens.valid! }, { authorization: `Bearer ${tokens.valid}` });
    verify("disabled caller", { token: tokens.valid! }, { authorization: `Bearer ${tokens.disabled}` });
    cases.push(base("TestApiKey, admin caller", { authorization: `Bearer ${adminToken}` }, testBody(v), true, TEST));
    cases.push(base("TestApiKey, plain caller", { authorization: `Bearer ${tokens.valid}` }, testBody(v), true, TEST));
    cases.push(base("TestApiKey, no caller key", {}, testBody(v), true, TEST));
    const good = toBinary(VerifyTokenRequestSchema, create(VerifyTokenRequestSchema, { token: tokens.valid! }));
    // An unknown field number: protobuf keeps it as unknown; both paths decode it alike.
    const withUnknown = Buffer.concat([good, Buffer.from([0xf8, 0x06, 0x01])]);
    if (v.grpc) {
      verify("grpc-timeout 5S", { token: tokens.valid! }, { ...caller, "grpc-timeout": "5S" });
      verify("grpc-timeout of 99999999H (clamped)", { token: tokens.valid! }, { ...caller, "grpc-timeout": "99999999H" });
      cases.push(base("unknown field", caller, envelope(withUnknown), true));
      // What the fast path leaves to connect.
      verify("grpc-timeout it cannot parse", { token: tokens.valid! }, { ...caller, "grpc-timeout": "soon" }, false);
      verify("unsupported grpc-encoding", { token: tokens.valid! }, { ...caller, "grpc-encoding": "snappy" }, false);
      cases.push(base("gzip request", { ...caller, "grpc-encoding": "gzip" }, envelope(gzipSync(good), 1), false));
      cases.push(base("compressed flag without encoding", caller, envelope(good, 1), false));
      cases.push(base("envelope longer than body", caller, Buffer.concat([Buffer.from([0, 0, 0, 0, 200]), good]), false));
      cases.push(base("two envelopes", caller, Buffer.concat([envelope(good), envelope(good)]), false));
      cases.push(base("truncated envelope header", caller, Buffer.from([0, 0]), false));
      cases.push(base("garbage message", caller, envelope(Buffer.from([0xff, 0xff, 0xff])), false));
      cases.push(base("gRPC +json", { ...caller, "content-type": "application/grpc+json" }, envelope(Buffer.from(`{"token":"x"}`)), false));
      cases.push(base("gRPC-Web", { ...caller, "content-type": "application/grpc-web+proto" }, envelope(good), false));
      cases.push(base("query string", caller, envelope(good), false, `${VERIFY}?x=1`));
      cases.push(base("message over the read limit", caller, envelope(Buffer.alloc(1024 * 1024 + 1)), false));
    } else {
      const json = v.contentType === "application/json";
      verify("connect-timeout-ms 5000", { token: tokens.valid! }, { ...caller, "connect-timeout-ms": "5000" });
      verify("connect-timeout-ms it cannot parse", { token: tokens.valid! }, { ...caller, "connect-timeout-ms": "-1" }, false);
      verify("unsupported content-encoding", { token: tokens.valid! }, { ...caller, "content-encoding": "snappy" }, false);
      cases.push(base("gzip request", { ...caller, "content-encoding": "gzip" }, gzipSync(json ? Buffer.from(`{"token":"${tokens.valid}"}`) : good), false));
      if (json) {
        cases.push(base("unknown JSON field", caller, Buffer.from(`{"token":"x","colour":"red"}`), false));
        cases.push(base("JSON that does not parse", caller, Buffer.from(`{"token":`), false));
        cases.push(base("duplicate JSON key", caller, Buffer.from(`{"token":"a","token":"b"}`), false));
        cases.push(base("JSON not UTF-8", caller, Buffer.from([0x7b, 0x22, 0x74, 0x6f, 0x6b, 0x65, 0x6e, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), false));
        cases.push(base("unknown enum-free JSON type", caller, Buffer.from(`{"token":5}`), false));
        cases.push(base("charset parameter", { ...caller, "content-type": "application/json; charset=utf-8" }, Buffer.from(`{"token":"x"}`), false));
      } else {
        cases.push(base("unknown field", caller, withUnknown, true));
        cases.push(base("garbage message", caller, Buffer.from([0xff, 0xff, 0xff]), false));
      }
      cases.push(base("Connect streaming content type", { ...caller, "content-type": "application/connect+proto" }, envelope(good), false));
      cases.push(base("GET", { authorization: `Bearer ${adminToken}` }, new Uint8Array(0), false, `${TEST}?connect=v1&encoding=json&message=%7B%7D`));
      cases[cases.length - 1]!.method = "GET";
      cases.push(base("unknown content type", { ...caller, "content-type": "text/plain" }, good, false));
      cases.push(base("body over the read limit", caller, Buffer.alloc(1024 * 1024 + 1, 0x20), false));
    }
  }
  // gRPC over HTTP/1.1 is connect's to refuse.
  cases.push({ name: "gRPC over HTTP/1.1", transport: "h1", path: VERIFY, headers: { "content-type": "application/grpc", authorization: `Bearer ${verifierToken}` }, body: envelope(new Uint8Array(0)), fast: false });
  return cases;
}

/** apikeys_fast_path_requests_total{outcome="served"}, as a scrape reads it. */
async function served(): Promise<number> {
  const metric = await t.server.ctx.metrics.registry.getSingleMetric("apikeys_fast_path_requests_total")!.get();
  return metric.values.find((v) => v.labels.outcome === "served")?.value ?? 0;
}

describe("fast path: the same answer as the generic path", () => {
  it("answers every case of the corpus byte for byte as the generic path does", async () => {
    const cases = corpus();
    const mismatches: string[] = [];
    const wrongPath: string[] = [];
    for (const c of cases) {
      const before = await served();
      const fast = await send(t.server.port, c);
      const took = (await served()) - before === 1;
      const generic = await send(off.port, c);
      if (took !== c.fast) wrongPath.push(`${c.name}: fast path ${took ? "answered" : "did not answer"}`);
      if (JSON.stringify(fast) !== JSON.stringify(generic)) mismatches.push(`${c.name}\n  fast:    ${JSON.stringify(fast)}\n  generic: ${JSON.stringify(generic)}`);
    }
    expect(mismatches).toEqual([]);
    expect(wrongPath).toEqual([]);
    expect(cases.length).toBeGreaterThan(150);
  });

  it("covers every verdict code in the corpus", async () => {
    const codes = new Set<VerifyCode>();
    for (const c of corpus().filter((c) => c.fast && c.path === VERIFY && c.headers["content-type"] === "application/grpc")) {
      const answer = await send(t.server.port, c);
      if (answer.body.length > 10) codes.add(fromBinary(VerifyTokenResponseSchema, Buffer.from(answer.body, "hex").subarray(5)).code);
    }
    expect([...codes].sort()).toEqual(
      [VerifyCode.VALID, VerifyCode.NOT_FOUND, VerifyCode.DISABLED, VerifyCode.EXPIRED, VerifyCode.IP_NOT_ALLOWED, VerifyCode.INSUFFICIENT_PERMISSIONS, VerifyCode.RATE_LIMITED].sort(),
    );
  });
});

const run = promisify(execFile);
const BUF = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));

/** Runs `call` and returns how many requests the fast path answered meanwhile, with the call's result. */
async function onFastPath<T>(call: () => Promise<T>): Promise<{ result: T; served: number }> {
  const before = await served();
  const result = await call();
  return { result, served: (await served()) - before };
}

describe("fast path: real clients", () => {
  it("grpc-js reads a verdict and, for a missing caller key, the status with its details", async () => {
    const client = new grpc.Client(`127.0.0.1:${t.server.port}`, grpc.credentials.createInsecure());
    const call = (metadata: grpc.Metadata) =>
      new Promise<{ err: grpc.ServiceError | null; res?: ReturnType<typeof fromBinary<typeof VerifyTokenResponseSchema>> }>((resolve) => {
        client.makeUnaryRequest(
          VERIFY,
          (m: VerifyTokenRequest) => Buffer.from(toBinary(VerifyTokenRequestSchema, m)),
          (b: Buffer) => fromBinary(VerifyTokenResponseSchema, b),
          create(VerifyTokenRequestSchema, { token: tokens.valid!, allOf: ["billing:read"] }),
          metadata,
          (err, res) => resolve({ err, res }),
        );
      });
    const withKey = new grpc.Metadata();
    withKey.set("authorization", `Bearer ${verifierToken}`);
    const ok = await onFastPath(() => call(withKey));
    expect(ok.served).toBe(1);
    expect(ok.result.err).toBeNull();
    expect(ok.result.res).toMatchObject({ valid: true, code: VerifyCode.VALID, apiKey: { name: "caller" }, environment: { tier: "gold", shard: 3, beta: true } });
    const refused = await onFastPath(() => call(new grpc.Metadata()));
    expect(refused.served).toBe(1);
    expect(refused.result.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    const [bin] = refused.result.err!.metadata.get("grpc-status-details-bin");
    const status = fromBinary(StatusSchema, bin as Buffer);
    expect(anyUnpack(status.details[0]!, ErrorInfoSchema)?.reason).toBe("API_KEY_MISSING");
    client.close();
  });

  it("buf curl over gRPC and Connect (HTTP/1.1 and h2) gets the verdict", async () => {
    const url = `http://127.0.0.1:${t.server.port}${VERIFY}`;
    const body = JSON.stringify({ token: tokens.valid, all_of: ["billing:read"] });
    for (const args of [["--protocol", "grpc", "--http2-prior-knowledge"], ["--protocol", "connect", "--http2-prior-knowledge"], ["--protocol", "connect"]]) {
      const { result, served } = await onFastPath(() => run(BUF, ["curl", ...args, "--schema", "proto", "-H", `authorization: Bearer ${verifierToken}`, "-d", body, url]));
      expect(served, args.join(" ")).toBe(1);
      expect(JSON.parse(result.stdout), args.join(" ")).toMatchObject({ valid: true, code: "VERIFY_CODE_VALID", apiKey: { name: "caller" } });
    }
  });

  it("Python grpcio gets the verdict and the refusal", async () => {
    const request = Buffer.from(toBinary(VerifyTokenRequestSchema, create(VerifyTokenRequestSchema, { token: tokens.disabled! }))).toString("hex");
    const script = [
      "import grpc, sys",
      `channel = grpc.insecure_channel("127.0.0.1:${t.server.port}")`,
      `verify = channel.unary_unary("${VERIFY}")`,
      `print(verify(bytes.fromhex("${request}"), metadata=(("authorization", "Bearer ${verifierToken}"),)).hex())`,
      "try:",
      `    verify(bytes.fromhex("${request}"))`,
      "except grpc.RpcError as e:",
      "    print(e.code().name, e.details())",
    ].join("\n");
    const { result, served } = await onFastPath(() => run("/usr/bin/python3", ["-c", script]));
    expect(served).toBe(2);
    const [hex, refusal] = result.stdout.trim().split("\n");
    expect(fromBinary(VerifyTokenResponseSchema, Buffer.from(hex!, "hex"))).toMatchObject({ valid: false, code: VerifyCode.DISABLED, apiKey: { name: "disabled" } });
    expect(refusal).toBe(`UNAUTHENTICATED ${MISSING_KEY}`);
  });

  it("fetch with Connect JSON gets every field of the verdict", async () => {
    const { result, served } = await onFastPath(async () => {
      const res = await fetch(`${t.baseUrl}/apikeys.v1.ApiKeysService/TestApiKey`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": tokens.valid! },
        body: "{}",
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    });
    expect(served).toBe(1);
    expect(result.status).toBe(200);
    expect(result.json).toMatchObject({ apiKey: { name: "caller", createdBy: "" }, permissions: ["billing:read"] });
  });
});

describe("fast path: APIKEYS_FAST_PATH=0", () => {
  it("turns the fast path off: every call goes through connect", async () => {
    const plain = await startTestServer({ APIKEYS_FAST_PATH: "0" });
    try {
      const res = await clientsFor(plain.baseUrl, "grpc", plain.adminToken).data.testApiKey({});
      expect(res.apiKey?.name).toBe("bootstrap");
      await expect(plain.server.ctx.metrics.registry.getSingleMetric("apikeys_fast_path_requests_total")?.get()).resolves.toMatchObject({ values: [] });
    } finally {
      await plain.stop();
    }
  });
});

describe("fast path: pre-encoded responses follow the key", () => {
  it("answers a change to the key or its policy at once, on every fast-path protocol", async () => {
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const policy = (await admin.adminCreateApiKeyPolicy({ name: "changing", permissions: ["billing:read"] })).policy!;
    const key = await admin.adminCreateApiKey({ name: "changing", policyId: policy.id });
    const grpcVariant = VARIANTS[0]!;
    const protoVariant = VARIANTS[2]!;
    const verdict = async (v: Variant) => {
      const c: Case = { name: "", transport: v.transport, path: VERIFY, headers: { "content-type": v.contentType, ...v.extra, authorization: `Bearer ${verifierToken}` }, body: verifyBody(v, { token: key.token, allOf: ["billing:refund"] }), fast: true };
      const before = await served();
      const answer = await send(t.server.port, c);
      expect((await served()) - before).toBe(1);
      const bytes = Buffer.from(answer.body, "hex");
      return fromBinary(VerifyTokenResponseSchema, v.grpc ? bytes.subarray(5) : bytes);
    };
    for (const v of [grpcVariant, protoVariant]) expect(await verdict(v)).toMatchObject({ code: VerifyCode.INSUFFICIENT_PERMISSIONS, missing: ["billing:refund"] });
    // A warm entry is answered from its bytes; a policy change replaces them.
    await admin.adminUpdateApiKeyPolicy({ id: policy.id, permissions: ["billing:read", "billing:refund"], updateMask: { paths: ["permissions"] } });
    for (const v of [grpcVariant, protoVariant]) expect(await verdict(v)).toMatchObject({ code: VerifyCode.VALID, permissions: ["billing:read", "billing:refund"], missing: [] });
    await admin.adminUpdateApiKey({ id: key.apiKey!.id, enabled: false, updateMask: { paths: ["enabled"] } });
    for (const v of [grpcVariant, protoVariant]) expect(await verdict(v)).toMatchObject({ code: VerifyCode.DISABLED, valid: false, apiKey: { enabled: false } });
    await admin.adminUpdateApiKey({ id: key.apiKey!.id, name: "renamed", enabled: true, updateMask: { paths: ["name", "enabled"] } });
    for (const v of [grpcVariant, protoVariant]) expect(await verdict(v)).toMatchObject({ code: VerifyCode.VALID, apiKey: { name: "renamed", enabled: true } });
    await admin.adminDeleteApiKey({ id: key.apiKey!.id });
    for (const v of [grpcVariant, protoVariant]) {
      const gone = await verdict(v);
      expect(gone.code).toBe(VerifyCode.NOT_FOUND);
      expect(gone.apiKey).toBeUndefined();
    }
  });
});

/** A throttled answer without what moves with the clock: the RetryInfo delay, the seconds in the message and Retry-After. */
function withoutClock(answer: Answer): unknown {
  const seconds = (text: string) => text.replace(/retry in \d+s/g, "retry in Ns");
  const strip = ([k, v]: [string, string]): [string, string] => {
    if (k === "retry-after") return [k, "N"];
    if (k === "grpc-message") return [k, seconds(v)];
    if (k === "grpc-status-details-bin") {
      const status = fromBinary(StatusSchema, Buffer.from(v, "base64"));
      return [k, JSON.stringify({ code: status.code, message: seconds(status.message), types: status.details.map((d) => d.typeUrl) })];
    }
    return [k, v];
  };
  let body: unknown = answer.body;
  if (answer.body.length > 0 && answer.headers.some(([k, v]) => k.toLowerCase() === "content-type" && v === "application/json")) {
    const json = JSON.parse(Buffer.from(answer.body, "hex").toString()) as { message: string; details: Array<{ type: string }> };
    body = { ...json, message: seconds(json.message), details: json.details.map((d) => d.type) };
  }
  return { status: answer.status, headers: answer.headers.map(strip).filter(([k]) => k.toLowerCase() !== "content-length"), trailers: answer.trailers.map(strip), body };
}

describe("fast path: the failure throttle", () => {
  it("refuses a throttled peer as the generic path does, on every fast-path protocol", async () => {
    const limited = await startTestServer({ APIKEYS_AUTH_FAILURE_LIMIT: "2" });
    const app = limited.server.ctx;
    const offCtx = { ...app, limits: { ...app.limits, fastPath: false } };
    const offLimited = await listen(planeHandler(offCtx, (r) => (dataRoutes(offCtx)(r), adminRoutes(offCtx)(r)), adminExtras(offCtx)), 0, "127.0.0.1", readConfig({}).http.limits);
    try {
      const garbage = { authorization: `Bearer ${generateToken("ak")}` };
      const cases = VARIANTS.map((v): Case => ({ name: v.name, transport: v.transport, path: TEST, headers: { "content-type": v.contentType, ...v.extra, ...garbage }, body: testBody(v), fast: true }));
      // Fail until the address is throttled.
      for (let i = 0; i < 3; i++) await send(limited.server.port, cases[0]!);
      for (const c of cases) {
        const fast = await send(limited.server.port, c);
        const generic = await send(offLimited.port, c);
        expect(withoutClock(fast), c.name).toEqual(withoutClock(generic));
        expect(JSON.stringify(withoutClock(fast)), c.name).toMatch(/resource_exhausted|"grpc-status","8"/);
        expect(JSON.stringify(withoutClock(fast)), c.name).toContain("google.rpc.RetryInfo");
      }
    } finally {
      for (const port of [limited.server.port, offLimited.port]) sessions.get(port)?.close();
      await offLimited.close(0);
      await limited.stop();
    }
  });
});
