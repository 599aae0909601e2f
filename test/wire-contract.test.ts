// What clients we did not write see on the wire: no token in a URL, deadlines
// reported as DEADLINE_EXCEEDED, grpc-message as the gRPC spec encodes it, and
// verdict fields present in JSON even when false.
import * as grpc from "@grpc/grpc-js";
import { execFile } from "node:child_process";
import http2 from "node:http2";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MethodOptions_IdempotencyLevel as Idempotency } from "@bufbuild/protobuf/wkt";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { SERVICES } from "../src/server.js";
import { httpRoutes } from "../src/transcoding/http-rules.js";
import { generateToken } from "../src/tokens/token.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

const BUF = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));

let t: TestServer;
let verifierToken: string;
let limitedToken: string;
let limitedKeyId: string;
beforeAll(async () => {
  t = await startTestServer();
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const verifier = await admin.adminCreateApiKeyPolicy({ name: "verifier", permissions: ["apikeys:verify"] });
  verifierToken = (await admin.adminCreateApiKey({ name: "gateway", policyId: verifier.policy!.id })).token;
  // One verification a day: a single spent unit shows.
  const limited = await admin.adminCreateApiKey({
    name: "limited",
    policyId: verifier.policy!.id,
    rateLimit: { requests: 1, period: { seconds: 86_400n } },
  });
  limitedToken = limited.token;
  limitedKeyId = limited.apiKey!.id;
});
afterAll(() => t.stop());

describe("no token in a URL", () => {
  it("Connect GET of VerifyToken answers 405 and neither spends rate-limit budget nor marks the key used", async () => {
    const message = encodeURIComponent(JSON.stringify({ token: limitedToken }));
    const res = await fetch(`${t.baseUrl}/apikeys.v1.ApiKeysService/VerifyToken?connect=v1&encoding=json&message=${message}`, {
      headers: { authorization: `Bearer ${verifierToken}` },
    });
    expect(res.status).toBe(405);
    await res.body?.cancel();

    await t.server.ctx.verifier.flushLastUsed();
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    expect((await admin.adminGetApiKey({ id: limitedKeyId })).apiKey?.lastUsedOn).toBeUndefined();

    const { data } = clientsFor(t.baseUrl, "connect", verifierToken);
    expect((await data.verifyToken({ token: limitedToken })).code).toBe(VerifyCode.VALID);
    expect((await data.verifyToken({ token: limitedToken })).code).toBe(VerifyCode.RATE_LIMITED);
  });

  it("declares no RPC that carries a secret as NO_SIDE_EFFECTS, and binds none to a REST GET", () => {
    const secretFields = new Set(["token", "secret"]);
    for (const service of SERVICES) {
      for (const method of service.methods) {
        const carriesSecret = method.input.fields.some((f) => secretFields.has(f.name));
        if (carriesSecret) expect(method.idempotency, method.name).not.toBe(Idempotency.NO_SIDE_EFFECTS);
      }
    }
    for (const route of httpRoutes([...SERVICES])) {
      if (route.httpMethod !== "GET") continue;
      expect(route.method.input.fields.map((f) => f.name)).not.toContain("token");
    }
  });
});

describe("valid: false in JSON", () => {
  it("Connect JSON VerifyToken for an unknown token says \"valid\": false", async () => {
    const res = await fetch(`${t.baseUrl}/apikeys.v1.ApiKeysService/VerifyToken`, {
      method: "POST",
      headers: { authorization: `Bearer ${verifierToken}`, "content-type": "application/json" },
      body: JSON.stringify({ token: generateToken("ak") }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body.valid).toBe(false);
    expect(body.code).toBe("VERIFY_CODE_NOT_FOUND");
  });

  it("gRPC-Web JSON says the same", async () => {
    const res = await fetch(`${t.baseUrl}/apikeys.v1.ApiKeysService/VerifyToken`, {
      method: "POST",
      headers: { authorization: `Bearer ${verifierToken}`, "content-type": "application/grpc-web+json" },
      body: frame(new TextEncoder().encode(JSON.stringify({ token: generateToken("ak") })), 0),
    });
    const message = frames(new Uint8Array(await res.arrayBuffer())).find((f) => f.flags === 0);
    expect(JSON.parse(Buffer.from(message!.data).toString())).toMatchObject({ valid: false, code: "VERIFY_CODE_NOT_FOUND" });
  });

  it("REST says the same", async () => {
    const res = await fetch(`${t.baseUrl}/api/v1/api_keys/verify`, {
      method: "POST",
      headers: { authorization: `Bearer ${verifierToken}`, "content-type": "application/json" },
      body: JSON.stringify({ token: generateToken("ak") }),
    });
    expect(((await res.json()) as Record<string, unknown>).valid).toBe(false);
  });
});

describe("grpc-message", () => {
  it("is encoded as the gRPC spec says, so grpc-js shows the message verbatim", async () => {
    const client = new grpc.Client(`127.0.0.1:${t.server.port}`, grpc.credentials.createInsecure());
    try {
      const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
        client.makeUnaryRequest(
          "/apikeys.v1.ApiKeysService/TestApiKey",
          () => Buffer.alloc(0),
          (b: Buffer) => b,
          {},
          (e) => (e ? resolve(e) : reject(new Error("call succeeded without a key"))),
        ),
      );
      expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(err.details).toBe("missing API key: send 'Authorization: Bearer <token>' or 'x-api-key: <token>'");
    } finally {
      client.close();
    }
  });

  it("percent-encodes bytes outside 0x20-0x7E and '%' only", async () => {
    const session = http2.connect(`http://127.0.0.1:${t.server.port}`);
    try {
      // A malformed token is echoed in no message, but a bad client_ip is (cut at 64 characters).
      const { trailers } = await grpcCall(session, "/apikeys.v1.ApiKeysService/VerifyToken", verifyRequestBytes(generateToken("ak"), "é 100%:"), {
        authorization: `Bearer ${verifierToken}`,
      });
      expect(trailers["grpc-status"]).toBe("3");
      expect(trailers["grpc-message"]).toBe('client_ip must be an IPv4 or IPv6 address, got "%C3%A9 100%25:"');
    } finally {
      session.close();
    }
  });
});

describe("server-side deadlines end streams with DEADLINE_EXCEEDED", () => {
  const streams = [
    { path: "/apikeys.v1.ApiKeysService/WatchInvalidations", auth: true },
    { path: "/grpc.health.v1.Health/Watch", auth: false },
  ];

  it.each(streams)("gRPC $path", async ({ path, auth }) => {
    const session = http2.connect(`http://127.0.0.1:${t.server.port}`);
    try {
      const { trailers } = await grpcCall(session, path, new Uint8Array(), {
        "grpc-timeout": "300m",
        ...(auth && { authorization: `Bearer ${verifierToken}` }),
      });
      expect(trailers["grpc-status"]).toBe("4");
    } finally {
      session.close();
    }
  });

  it.each(streams)("gRPC-Web $path", async ({ path, auth }) => {
    const res = await fetch(`${t.baseUrl}${path}`, {
      method: "POST",
      headers: {
        "content-type": "application/grpc-web+proto",
        "grpc-timeout": "300m",
        ...(auth && { authorization: `Bearer ${verifierToken}` }),
      },
      body: frame(new Uint8Array(), 0),
    });
    const bytes = new Uint8Array(await res.arrayBuffer());
    const trailer = frames(bytes).find((f) => f.flags === 0x80);
    expect(Buffer.from(trailer!.data).toString()).toMatch(/grpc-status: ?4\r\n/);
  });

  it.each(streams)("Connect $path", async ({ path, auth }) => {
    const res = await fetch(`${t.baseUrl}${path}`, {
      method: "POST",
      headers: {
        "content-type": "application/connect+json",
        "connect-timeout-ms": "300",
        ...(auth && { authorization: `Bearer ${verifierToken}` }),
      },
      body: frame(new TextEncoder().encode("{}"), 0),
    });
    const bytes = new Uint8Array(await res.arrayBuffer());
    const end = frames(bytes).find((f) => f.flags === 0x02);
    expect(JSON.parse(Buffer.from(end!.data).toString())).toMatchObject({ error: { code: "deadline_exceeded" } });
  });

  it("buf curl over gRPC sees DEADLINE_EXCEEDED on a WatchInvalidations stream with --timeout", async () => {
    const result = await promisify(execFile)(
      BUF,
      [
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--timeout",
        "1s",
        "-H",
        `Authorization: Bearer ${verifierToken}`,
        `http://127.0.0.1:${t.server.port}/apikeys.v1.ApiKeysService/WatchInvalidations`,
      ],
      { timeout: 30_000 },
    ).then(
      () => ({ stderr: "", failed: false }),
      (err: { stderr: string }) => ({ stderr: err.stderr, failed: true }),
    );
    expect(result.failed).toBe(true);
    expect(result.stderr).toContain('"code": "deadline_exceeded"');
  });
});

/** A gRPC length-prefixed message. */
function frame(data: Uint8Array, flags: number): Uint8Array {
  const out = new Uint8Array(5 + data.length);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

function frames(bytes: Uint8Array): Array<{ flags: number; data: Uint8Array }> {
  const out: Array<{ flags: number; data: Uint8Array }> = [];
  for (let at = 0; at + 5 <= bytes.length; ) {
    const length = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
    out.push({ flags: bytes[at]!, data: bytes.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return out;
}

/** VerifyTokenRequest{token, client_ip} in protobuf binary (fields 1 and 4). */
function verifyRequestBytes(token: string, clientIp: string): Uint8Array {
  const field = (no: number, text: string) => {
    const bytes = Buffer.from(text, "utf8");
    return Buffer.concat([Buffer.from([(no << 3) | 2, bytes.length]), bytes]);
  };
  return Buffer.concat([field(1, token), field(4, clientIp)]);
}

/** One gRPC call over a raw HTTP/2 stream, returning what the server itself sent. */
function grpcCall(
  session: http2.ClientHttp2Session,
  path: string,
  message: Uint8Array,
  headers: Record<string, string>,
): Promise<{ trailers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    stream.on("response", (h) => {
      // A trailers-only answer carries the status in its headers.
      if (h["grpc-status"] !== undefined) resolve({ trailers: h });
    });
    stream.on("trailers", (trailers) => resolve({ trailers }));
    stream.on("data", () => {});
    stream.on("error", reject);
    stream.end(frame(message, 0));
  });
}
