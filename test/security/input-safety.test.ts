import { crc32 } from "node:zlib";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { generateToken } from "../../src/tokens/token.js";
import { codeOf, rejection } from "../helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "../helpers/server.js";

/*
 * SQL-meta characters and Unicode in every free-text field survive a write and
 * read back byte for byte, over each protocol and REST; what the database cannot
 * store (NUL) is refused as invalid_argument, never an internal error. Oversized
 * requests are refused with a message that names the limit.
 */

const NASTY = [
  "'; DROP TABLE api_keys; --",
  "\" OR \"1\"=\"1",
  "a\\'b\\\\c",
  "100% _match_ [x]",
  "$1 $$dollar$$ :name ?",
  "/* comment */ -- tail",
  "Ünïcödé ключ 鍵 キー 🔑🗝️",
  "e\u0301 combining, \u200d zero-width joiner, \u202e right-to-left",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP 𐍈",
  "<script>alert(1)</script>&amp;",
];

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t.stop());

describe.each(PROTOCOLS)("round trip over %s", (protocol) => {
  it("keeps policy, key, consumer and permission strings exactly", async () => {
    const { admin, data } = clientsFor(t.baseUrl, protocol, t.adminToken);
    const service = `rt-${protocol.replace("-", "")}`;
    for (const [i, text] of NASTY.entries()) {
      const tag = `${protocol} ${i} ${text}`;
      const registered = await data.registerPermissions({ service, permissions: [{ name: `p${i}`, description: text }] });
      expect(registered.permissions.find((p) => p.name === `${service}:p${i}`)?.description).toBe(text);
      const stored = (await admin.adminGetApiKeyPermissions({})).permissions.find((p) => p.name === `${service}:p${i}`);
      expect(stored?.description).toBe(text);

      const policy = (await admin.adminCreateApiKeyPolicy({ name: tag, description: text, permissions: [`${service}:p${i}`] })).policy!;
      expect([policy.name, policy.description]).toEqual([tag, text]);
      const username = `${protocol}-${i}-${text.replace(/\s/g, "")}`.slice(0, 200);
      const consumer = (await admin.adminCreateConsumer({ username })).consumer!;
      expect(consumer.username).toBe(username);
      await admin.adminGrantConsumerPolicies({ consumer: username, policyIds: [policy.id] });

      const created = await admin.adminCreateApiKey({
        name: tag,
        policyId: policy.id,
        description: text,
        metadata: { [text]: text },
        environment: { note: text },
        consumer: username,
      });
      const read = (await admin.adminGetApiKey({ id: created.apiKey!.id })).apiKey!;
      expect(read.name).toBe(tag);
      expect(read.description).toBe(text);
      expect(read.metadata).toEqual({ [text]: text });
      expect(read.environment).toEqual({ note: text });
      const verdict = await data.verifyToken({ token: created.token });
      expect(verdict.code).toBe(VerifyCode.VALID);
      expect(verdict.apiKey?.name).toBe(tag);
      // A search with the text must not match more than the one key it names.
      const policies = (await admin.adminGetApiKeyPolicies({})).policies.filter((p) => p.name === tag);
      expect(policies).toHaveLength(1);
    }
  });
});

it("reads the same strings back over REST", async () => {
  const res = await fetch(`${t.baseUrl}/api/v1/api_keys/policies`, { headers: { authorization: `Bearer ${t.adminToken}` } });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { policies: Array<{ name: string; description: string }> };
  for (const [i, text] of NASTY.entries()) {
    expect(body.policies.find((p) => p.name === `connect ${i} ${text}`)?.description).toBe(text);
  }
});

it("refuses NUL and other control characters as invalid_argument, never internal", async () => {
  const { admin, data } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const policyId = (await admin.adminCreateApiKeyPolicy({ name: "nul-target", permissions: [] })).policy!.id;
  const attempts: Array<Promise<unknown>> = [
    admin.adminCreateApiKeyPolicy({ name: "nul\u0000name", permissions: [] }),
    admin.adminCreateApiKeyPolicy({ name: "nul-description", description: "a\u0000b", permissions: [] }),
    admin.adminCreateApiKey({ name: "nul\u0000key", policyId }),
    admin.adminCreateApiKey({ name: "nul-key-description", policyId, description: "a\u0000b" }),
    admin.adminCreateApiKey({ name: "nul-key-metadata", policyId, metadata: { "a\u0000": "b" } }),
    admin.adminCreateConsumer({ username: "nul\u0000user" }),
    data.registerPermissions({ service: "nulsvc", permissions: [{ name: "p", description: "a\u0000b" }] }),
    data.verifyToken({ token: "ak_\u0000" }),
  ];
  const codes = await Promise.all(attempts.map((a) => codeOf(a)));
  for (const [i, code] of codes.entries()) expect([i, code]).toEqual([i, expect.toBeOneOf([Code.InvalidArgument, "ok"])]);
  expect(await codeOf(admin.adminCreateApiKeyPolicy({ name: "nul\u0000name", permissions: [] }))).toBe(Code.InvalidArgument);
});

describe("request size limit", () => {
  const huge = "x".repeat(2 * 1024 * 1024);

  it.each(PROTOCOLS)("refuses a request over 1 MiB over %s with resource_exhausted naming the limit", async (protocol) => {
    const { admin } = clientsFor(t.baseUrl, protocol, t.adminToken);
    const err = await rejection(admin.adminCreateApiKeyPolicy({ name: "huge", description: huge, permissions: [] }));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toMatch(/1048576/);
  });

  it("refuses an oversized REST body with 413 and a JSON status", async () => {
    const res = await fetch(`${t.baseUrl}/api/v1/api_keys/policies`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "huge", description: huge }),
    });
    expect(res.status).toBe(413);
    const body = (await res.json()) as { code: number; message: string };
    expect(body.code).toBe(Code.ResourceExhausted);
    expect(body.message).toMatch(/1048576/);
  });

  it("answers the next request of the same client at once (the refused body is not left on a reused connection)", async () => {
    for (const protocol of PROTOCOLS) {
      const { admin } = clientsFor(t.baseUrl, protocol, t.adminToken);
      expect(await codeOf(admin.adminCreateApiKeyPolicy({ name: "huge", description: huge, permissions: [] }))).toBe(Code.ResourceExhausted);
      const next = await admin.adminCreateApiKeyPolicy({ name: `after-huge-${protocol}`, permissions: [] }, { timeoutMs: 5_000 });
      expect(next.policy?.name).toBe(`after-huge-${protocol}`);
    }
  });
});

it("takes as long to refuse a near-miss token as a random one (no early exit on a shared prefix)", async () => {
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const policyId = (await admin.adminCreateApiKeyPolicy({ name: "timing", permissions: [] })).policy!.id;
  const real = (await admin.adminCreateApiKey({ name: "timing", policyId })).token;
  const verifier = t.server.ctx.verifier;
  await verifier.verify(real, [], []);
  // Same prefix and the first 31 of 32 secret characters, with a valid checksum, so it reaches the lookup.
  const nearMiss = (): string => {
    const last = real[3 + 31]!;
    const other = BASE62.replace(last, "")[Math.floor(Math.random() * 61)]!;
    return withChecksum(real.slice(0, 3 + 31) + other);
  };
  const time = async (token: string) => {
    const started = process.hrtime.bigint();
    expect((await verifier.verify(token, [], [])).code).toBe(VerifyCode.NOT_FOUND);
    return Number(process.hrtime.bigint() - started);
  };
  const near: number[] = [];
  const random: number[] = [];
  for (let i = 0; i < 150; i++) {
    near.push(await time(nearMiss()));
    random.push(await time(generateToken("ak")));
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const ratio = median(near) / median(random);
  expect(ratio).toBeGreaterThan(0.5);
  expect(ratio).toBeLessThan(2);
});

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** Appends the valid checksum to `prefix_secret`, as the token format defines it (CRC32 in 6 base62 digits). */
function withChecksum(prefixAndSecret: string): string {
  let value = crc32(prefixAndSecret.replace("_", ""));
  let out = "";
  for (let i = 0; i < 6; i++) {
    out = BASE62[value % 62] + out;
    value = Math.floor(value / 62);
  }
  return `${prefixAndSecret}${out}`;
}

describe("undecodable requests", () => {
  const truncated = Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x41]);
  const path = "/apikeys.v1.ApiKeysAdminService/AdminCreateApiKeyPolicy";

  it("answers malformed protobuf over Connect with 400 invalid_argument, not internal", async () => {
    const res = await fetch(`${t.baseUrl}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/proto" },
      body: truncated,
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/^parse binary: /);
  });

  it("answers malformed protobuf over gRPC-Web with status 3 in the trailers", async () => {
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, truncated.length]), truncated]);
    const res = await fetch(`${t.baseUrl}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/grpc-web+proto" },
      body: frame,
    });
    const text = Buffer.from(await res.arrayBuffer()).toString("latin1");
    const status = res.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(text)?.[1];
    expect(status).toBe("3");
  });
});
