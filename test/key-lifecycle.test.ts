import { create } from "@bufbuild/protobuf";
import { durationFromMs, FieldMaskSchema, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { codeOf, rejection } from "./helpers/errors.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

type Clients = ReturnType<typeof clientsFor>;

let t: TestServer;
let policyId: string;
beforeAll(async () => {
  t = await startTestServer();
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "orders", permissions: [{ name: "read", description: "" }] });
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "orders-reader", permissions: ["orders:read"] })).policy!.id;
});
afterAll(() => t.stop());

const mask = (...paths: string[]) => create(FieldMaskSchema, { paths });
const inMs = (ms: number) => timestampFromDate(new Date(Date.now() + ms));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(["connect", "grpc"] as const)("key options over %s", (protocol) => {
  let admin: Clients["admin"];
  let data: Clients["data"];
  beforeAll(() => {
    ({ admin, data } = clientsFor(t.baseUrl, protocol, t.adminToken));
  });
  const verify = (token: string, clientIp = "") => data.verifyToken({ token, clientIp, allOf: ["orders:read"] });
  let n = 0;
  const name = (what: string) => `${what}-${protocol}-${++n}`;

  it("stores every option, shows it on AdminGetApiKey and in VerifyToken", async () => {
    const expiresOn = inMs(3_600_000);
    const created = await admin.adminCreateApiKey({
      name: name("full"),
      policyId,
      description: "the nightly export job",
      metadata: { team: "data", ticket: "OPS-12" },
      expiresOn,
      allowedCidrs: ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"],
      environment: { api_key: "upstream-secret", retries: 3, beta: true },
      rateLimit: { requests: 100, period: durationFromMs(60_000) },
    });
    const { apiKey } = await admin.adminGetApiKey({ id: created.apiKey!.id });
    expect(apiKey?.description).toBe("the nightly export job");
    expect(apiKey?.metadata).toEqual({ team: "data", ticket: "OPS-12" });
    expect(timestampDate(apiKey!.expiresOn!).getTime()).toBe(timestampDate(expiresOn).getTime());
    expect(apiKey?.allowedCidrs).toEqual(["10.0.0.0/8", "2001:db8::/32", "192.168.1.7/32"]);
    expect(apiKey?.environment).toEqual({ api_key: "upstream-secret", retries: 3, beta: true });
    expect(apiKey?.rateLimit?.requests).toBe(100);
    expect(apiKey?.rateLimit?.period?.seconds).toBe(60n);

    const res = await verify(created.token, "10.1.2.3");
    expect(res.code).toBe(VerifyCode.VALID);
    expect(res.environment).toEqual({ api_key: "upstream-secret", retries: 3, beta: true });
    expect(res.apiKey?.metadata).toEqual({ team: "data", ticket: "OPS-12" });
    expect(res.apiKey?.allowedCidrs).toEqual(apiKey?.allowedCidrs);
  });

  it("gives a new key any origin, also for an empty list; an update to an empty list admits none", async () => {
    const open = await admin.adminCreateApiKey({ name: name("open"), policyId });
    expect(open.apiKey?.allowedCidrs).toEqual(["0.0.0.0/0", "::/0"]);
    expect(open.apiKey?.environment).toEqual({});
    expect(open.apiKey?.rateLimit).toBeUndefined();
    expect(open.apiKey?.expiresOn).toBeUndefined();
    for (const ip of ["", "203.0.113.9", "2001:db8::1"]) expect((await verify(open.token, ip)).code).toBe(VerifyCode.VALID);

    const created = await admin.adminCreateApiKey({ name: name("closed"), policyId, allowedCidrs: [] });
    expect(created.apiKey?.allowedCidrs).toEqual(["0.0.0.0/0", "::/0"]);
    // Without the mask an empty list is "not given"; named in the mask it means no origin.
    const unchanged = await admin.adminUpdateApiKey({ id: created.apiKey!.id, allowedCidrs: [], description: "x" });
    expect(unchanged.apiKey?.allowedCidrs).toEqual(["0.0.0.0/0", "::/0"]);
    const emptied = await admin.adminUpdateApiKey({ id: created.apiKey!.id, allowedCidrs: [], updateMask: mask("allowed_cidrs") });
    expect(emptied.apiKey?.allowedCidrs).toEqual([]);
    for (const ip of ["", "10.0.0.1", "::1"]) {
      const res = await verify(created.token, ip);
      expect(res.code).toBe(VerifyCode.IP_NOT_ALLOWED);
      expect(res.valid).toBe(false);
      expect(res.apiKey?.id).toBe(created.apiKey?.id);
    }
  });

  it("checks client_ip against IPv4 and IPv6 CIDRs; an unknown address passes only any-origin keys", async () => {
    const { token } = await admin.adminCreateApiKey({
      name: name("narrow"),
      policyId,
      allowedCidrs: ["10.0.0.0/8", "2001:db8::/32"],
    });
    const expected: Record<string, VerifyCode> = {
      "10.255.0.1": VerifyCode.VALID,
      "::ffff:10.0.0.5": VerifyCode.VALID,
      "2001:db8:1::1": VerifyCode.VALID,
      "11.0.0.1": VerifyCode.IP_NOT_ALLOWED,
      "2001:db9::1": VerifyCode.IP_NOT_ALLOWED,
      "": VerifyCode.IP_NOT_ALLOWED,
    };
    for (const [ip, code] of Object.entries(expected)) expect([ip, (await verify(token, ip)).code]).toEqual([ip, code]);

    const v4only = await admin.adminCreateApiKey({ name: name("v4"), policyId, allowedCidrs: ["0.0.0.0/0"] });
    expect((await verify(v4only.token, "198.51.100.1")).code).toBe(VerifyCode.VALID);
    expect((await verify(v4only.token, "2001:db8::1")).code).toBe(VerifyCode.IP_NOT_ALLOWED);
    expect((await verify(v4only.token, "")).code).toBe(VerifyCode.IP_NOT_ALLOWED);
  });

  it("refuses invalid CIDRs, naming each", async () => {
    const err = await rejection(
      admin.adminCreateApiKey({ name: name("bad-cidr"), policyId, allowedCidrs: ["10.0.0.0/33", "172.16.0.0/12", "nonsense"] }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain('"10.0.0.0/33"');
    expect(err.rawMessage).toContain('"nonsense"');
    expect(err.rawMessage).not.toContain("172.16.0.0/12");
    const { apiKey } = await admin.adminCreateApiKey({ name: name("cidr-upd"), policyId });
    const upd = await rejection(admin.adminUpdateApiKey({ id: apiKey!.id, allowedCidrs: ["2001:db8::/129"] }));
    expect(upd.code).toBe(Code.InvalidArgument);
    expect(upd.rawMessage).toContain("2001:db8::/129");
  });

  it("holds TestApiKey and the admin plane to the caller's own address", async () => {
    const elsewhere = await admin.adminCreateApiKey({ name: name("elsewhere"), policyId, allowedCidrs: ["10.0.0.0/8"] });
    const err = await rejection(clientsFor(t.baseUrl, protocol, elsewhere.token).data.testApiKey({}));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toMatch(/may not be used from this address/);

    const local = await admin.adminCreateApiKey({ name: name("local"), policyId, allowedCidrs: ["127.0.0.0/8", "::1"] });
    const res = await clientsFor(t.baseUrl, protocol, local.token).data.testApiKey({});
    expect(res.apiKey?.id).toBe(local.apiKey?.id);
  });

  it("refuses an expiry in the past, says EXPIRED once it passes, and allows clearing it", async () => {
    const past = await rejection(admin.adminCreateApiKey({ name: name("past"), policyId, expiresOn: inMs(-1000) }));
    expect(past.code).toBe(Code.InvalidArgument);
    expect(past.rawMessage).toMatch(/expires_on must be in the future/);

    const created = await admin.adminCreateApiKey({ name: name("expiring"), policyId, expiresOn: inMs(1200) });
    // Cached now: expiry must still be honoured from the cache.
    expect((await verify(created.token)).code).toBe(VerifyCode.VALID);
    await sleep(1300);
    const expired = await verify(created.token);
    expect(expired.code).toBe(VerifyCode.EXPIRED);
    expect(expired.apiKey?.id).toBe(created.apiKey?.id);
    const denied = await rejection(clientsFor(t.baseUrl, protocol, created.token).data.testApiKey({}));
    expect(denied.rawMessage).toMatch(/expired/);

    const id = created.apiKey!.id;
    expect(await codeOf(admin.adminUpdateApiKey({ id, expiresOn: inMs(-5) }))).toBe(Code.InvalidArgument);
    const cleared = await admin.adminUpdateApiKey({ id, updateMask: mask("expires_on") });
    expect(cleared.apiKey?.expiresOn).toBeUndefined();
    expect((await verify(created.token)).code).toBe(VerifyCode.VALID);
    const extended = await admin.adminUpdateApiKey({ id, expiresOn: inMs(86_400_000) });
    expect(extended.apiKey?.expiresOn).toBeDefined();
    expect((await verify(created.token)).code).toBe(VerifyCode.VALID);
  });

  it("accepts only a flat environment of strings, numbers and booleans", async () => {
    for (const [environment, culprit] of [
      [{ nested: { a: 1 } }, "environment.nested is an object"],
      [{ list: [1, 2] }, "environment.list is an array"],
      [{ nothing: null }, "environment.nothing is null"],
      [{ "a.b": "x" }, 'name "a.b"'],
    ] as const) {
      const err = await rejection(admin.adminCreateApiKey({ name: name("env"), policyId, environment: environment as never }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toContain(culprit);
    }
    const { apiKey, token } = await admin.adminCreateApiKey({ name: name("env-ok"), policyId, environment: { region: "eu" } });
    const replaced = await admin.adminUpdateApiKey({ id: apiKey!.id, environment: { region: "us", weight: 0.5 } });
    expect(replaced.apiKey?.environment).toEqual({ region: "us", weight: 0.5 });
    expect((await verify(token)).environment).toEqual({ region: "us", weight: 0.5 });
    const cleared = await admin.adminUpdateApiKey({ id: apiKey!.id, updateMask: mask("environment") });
    expect(cleared.apiKey?.environment).toEqual({});
    expect((await verify(token)).environment).toEqual({});
  });

  it("bounds description and metadata", async () => {
    const tooMany = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
    const cases = [
      { description: "x".repeat(2001) },
      { metadata: tooMany },
      { metadata: { ["k".repeat(129)]: "v" } },
      { metadata: { k: "v".repeat(1025) } },
    ];
    for (const extra of cases) {
      expect(await codeOf(admin.adminCreateApiKey({ name: name("bounds"), policyId, ...extra }))).toBe(Code.InvalidArgument);
    }
  });

  it("refuses what Postgres cannot store (NUL characters, times past 9999) as invalid_argument, not internal", async () => {
    for (const extra of [{ description: "a\u0000b" }, { metadata: { k: "\u0000" } }, { environment: { k: "\u0000" } }]) {
      expect(await codeOf(admin.adminCreateApiKey({ name: name("nul"), policyId, ...extra }))).toBe(Code.InvalidArgument);
    }
    if (protocol === "grpc") {
      // Only the binary encoding can carry a time past the year 9999 (JSON cannot).
      const farFuture = { $typeName: "google.protobuf.Timestamp" as const, seconds: 400_000_000_000n, nanos: 0 };
      const err = await rejection(admin.adminCreateApiKey({ name: name("far"), policyId, expiresOn: farFuture }));
      expect([err.code, err.rawMessage]).toEqual([Code.InvalidArgument, expect.stringMatching(/before the year 10000/)]);
    }
  });

  it("updates each option through its update_mask path", async () => {
    const { apiKey, token } = await admin.adminCreateApiKey({
      name: name("masked"),
      policyId,
      description: "before",
      metadata: { a: "1" },
      rateLimit: { requests: 5, period: durationFromMs(1000) },
    });
    const id = apiKey!.id;
    const described = await admin.adminUpdateApiKey({ id, description: "after", updateMask: mask("description") });
    expect(described.apiKey?.description).toBe("after");
    expect(described.apiKey?.metadata).toEqual({ a: "1" });
    const relabelled = await admin.adminUpdateApiKey({ id, metadata: { b: "2" } });
    expect(relabelled.apiKey?.metadata).toEqual({ b: "2" });
    expect(relabelled.apiKey?.description).toBe("after");
    const unlabelled = await admin.adminUpdateApiKey({ id, updateMask: mask("metadata", "description") });
    expect(unlabelled.apiKey?.metadata).toEqual({});
    expect(unlabelled.apiKey?.description).toBe("");

    const narrowed = await admin.adminUpdateApiKey({ id, allowedCidrs: ["fd00::/8"], updateMask: mask("allowed_cidrs") });
    expect(narrowed.apiKey?.allowedCidrs).toEqual(["fd00::/8"]);
    expect((await verify(token, "fd12::1")).code).toBe(VerifyCode.VALID);

    const unlimited = await admin.adminUpdateApiKey({ id, updateMask: mask("rate_limit") });
    expect(unlimited.apiKey?.rateLimit).toBeUndefined();
    expect(await codeOf(admin.adminUpdateApiKey({ id, updateMask: mask("owner_of_nothing") }))).toBe(Code.InvalidArgument);
  });

  it("applies a CIDR change to a cached verdict at once", async () => {
    const { apiKey, token } = await admin.adminCreateApiKey({ name: name("recidr"), policyId });
    expect((await verify(token, "10.0.0.1")).code).toBe(VerifyCode.VALID);
    expect((await verify(token, "10.0.0.1")).code).toBe(VerifyCode.VALID);
    await admin.adminUpdateApiKey({ id: apiKey!.id, allowedCidrs: ["192.168.0.0/16"] });
    expect((await verify(token, "10.0.0.1")).code).toBe(VerifyCode.IP_NOT_ALLOWED);
    expect((await verify(token, "192.168.3.4")).code).toBe(VerifyCode.VALID);
  });

  it("enforces rate_limit with RATE_LIMITED, refills over the period, and validates it", async () => {
    const { apiKey, token } = await admin.adminCreateApiKey({
      name: name("limited"),
      policyId,
      rateLimit: { requests: 3, period: durationFromMs(1500) },
    });
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push((await verify(token)).code);
    expect(codes).toEqual([VerifyCode.VALID, VerifyCode.VALID, VerifyCode.VALID, VerifyCode.RATE_LIMITED]);
    const denied = await rejection(clientsFor(t.baseUrl, protocol, token).data.testApiKey({}));
    expect(denied.code).toBe(Code.Unauthenticated);
    expect(denied.rawMessage).toMatch(/rate limit/);
    // One request comes back every 500 ms.
    await sleep(600);
    expect((await verify(token)).code).toBe(VerifyCode.VALID);
    expect((await verify(token)).code).toBe(VerifyCode.RATE_LIMITED);

    await admin.adminUpdateApiKey({ id: apiKey!.id, updateMask: mask("rate_limit") });
    for (let i = 0; i < 5; i++) expect((await verify(token)).code).toBe(VerifyCode.VALID);

    for (const rateLimit of [
      { requests: 0, period: durationFromMs(1000) },
      { requests: 10, period: durationFromMs(500) },
      { requests: 10 },
      { requests: 10, period: durationFromMs(2 * 86_400_000) },
    ]) {
      const err = await rejection(admin.adminCreateApiKey({ name: name("bad-rate"), policyId, rateLimit }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toMatch(/rate_limit\./);
    }
  });
});

describe("key options over REST", () => {
  const rest = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${t.baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as Record<string, any> };
  };

  it("creates, updates and verifies a key with options, and reports a leak", async () => {
    const created = await rest("POST", "/api/v1/api_keys", {
      name: "rest-options",
      policy_id: policyId,
      allowed_cidrs: ["10.0.0.0/8"],
      environment: { api_key: "k" },
      expires_on: new Date(Date.now() + 3_600_000).toISOString(),
    });
    expect(created.status).toBe(200);
    const { id } = created.json.apiKey;
    expect(created.json.apiKey.allowedCidrs).toEqual(["10.0.0.0/8"]);

    const verified = await rest("POST", "/api/v1/api_keys/verify", { token: created.json.token, client_ip: "10.9.9.9" });
    expect(verified.json).toMatchObject({ valid: true, environment: { api_key: "k" } });
    const outside = await rest("POST", "/api/v1/api_keys/verify", { token: created.json.token, client_ip: "192.0.2.1" });
    expect(outside.json.code).toBe("VERIFY_CODE_IP_NOT_ALLOWED");

    const bad = await rest("PATCH", `/api/v1/api_keys/${id}`, { allowed_cidrs: ["10.0.0.0/40"] });
    expect(bad.status).toBe(400);
    expect(bad.json.message).toContain("10.0.0.0/40");
    const cleared = await rest("PATCH", `/api/v1/api_keys/${id}`, { update_mask: "expiresOn" });
    expect(cleared.status).toBe(200);
    expect(cleared.json.apiKey.expiresOn).toBeUndefined();

    const report = await rest("POST", "/api/v1/api_keys/leaks:report", { token: created.json.token, source_url: "https://x.example/" });
    expect(report.json).toEqual({ recognized: true, found: true });
    const after = await rest("POST", "/api/v1/api_keys/verify", { token: created.json.token, client_ip: "10.9.9.9" });
    expect(after.json.code).toBe("VERIFY_CODE_DISABLED");
  });
});
