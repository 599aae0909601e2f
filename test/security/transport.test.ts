import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chunked, connectRaw, envelope, h2Request, rawHttp, readUntilClosed } from "../helpers/raw.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "../helpers/server.js";

/*
 * Attacks on the connection layer, over raw sockets: malformed authorities, the
 * HTTP/1.1-vs-HTTP/2 sniffing, and bodies of many tiny chunks. The server must
 * answer each with a client error, stay up, and keep serving others meanwhile.
 */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t.stop());

const HEALTH = "/apikeys.v1.ApiKeysService/GetServiceHealth";

async function stillServes() {
  for (const protocol of PROTOCOLS) {
    const { data } = clientsFor(t.baseUrl, protocol);
    expect((await data.getServiceHealth({})).healthy, protocol).toBe(true);
  }
}

function h1(path: string, host: string | undefined, headers: Record<string, string>, body: string | Buffer = "", method = "POST"): Buffer {
  const head = [
    `${method} ${path} HTTP/1.1`,
    ...(host === undefined ? [] : [`Host: ${host}`]),
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    `Content-Length: ${Buffer.byteLength(body)}`,
    "Connection: close",
    "",
    "",
  ].join("\r\n");
  return Buffer.concat([Buffer.from(head, "latin1"), Buffer.from(body)]);
}

describe("an unparsable Host or :authority", () => {
  const BAD_HOSTS = ["a b", "a:99999", "[::1", "%zz", "a/b@c", ""];

  it.each(BAD_HOSTS)("HTTP/1.1 Host %j: Connect, gRPC-Web and REST answer a client error", async (host) => {
    const connect = await rawHttp(t.server.port, [h1(HEALTH, host, { "Content-Type": "application/json", "Connect-Protocol-Version": "1" }, "{}")]);
    expect(connect.status).toBe(400);
    expect(JSON.parse(connect.body)).toMatchObject({ code: "invalid_argument" });

    // The reproduction, exactly: no Connect header at all.
    const bare = await rawHttp(t.server.port, [h1(HEALTH, host, { "Content-Type": "application/json" }, "{}")]);
    expect(bare.status).toBe(400);

    const grpcWeb = await rawHttp(t.server.port, [h1(HEALTH, host, { "Content-Type": "application/grpc-web+proto" }, envelope(new Uint8Array()))]);
    expect(grpcWeb.status).toBe(200);
    expect(grpcWeb.head).toMatch(/^grpc-status: 3$/m);

    const rest = await rawHttp(t.server.port, [h1("/api/v1/api_keys/policies", host, {}, "", "GET")]);
    expect(rest.status).toBe(400);
    expect(JSON.parse(rest.body)).toMatchObject({ code: 3 });

    const probe = await rawHttp(t.server.port, [h1("/healthz", host, {}, "", "GET")]);
    expect(probe.status).toBe(400);
    await stillServes();
  });

  it("HTTP/1.0 without any Host is refused, not a crash", async () => {
    const head = `POST ${HEALTH} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`;
    const res = await rawHttp(t.server.port, [head]);
    expect(res.status).toBe(400);
    await stillServes();
  });

  it.each(["a:99999", "[::1", "%zz"])("HTTP/2 :authority %j: gRPC, gRPC-Web, Connect and REST answer a client error", async (authority) => {
    const session = http2.connect(t.baseUrl);
    try {
      const base = { ":method": "POST", ":path": HEALTH, ":authority": authority };
      const grpc = await h2Request(session, { ...base, "content-type": "application/grpc", te: "trailers" }, envelope(new Uint8Array()));
      expect(grpc.headers["grpc-status"]).toBe("3");
      const grpcWeb = await h2Request(session, { ...base, "content-type": "application/grpc-web+proto" }, envelope(new Uint8Array()));
      expect(grpcWeb.headers["grpc-status"]).toBe("3");
      const connect = await h2Request(session, { ...base, "content-type": "application/json", "connect-protocol-version": "1" }, Buffer.from("{}"));
      expect(connect.status).toBe(400);
      expect(JSON.parse(connect.body.toString())).toMatchObject({ code: "invalid_argument" });
      const rest = await h2Request(session, { ":method": "GET", ":path": "/api/v1/api_keys/policies", ":authority": authority });
      expect(rest.status).toBe(400);
      // The session itself stays usable.
      const good = await h2Request(session, { ...base, ":authority": `127.0.0.1:${t.server.port}`, "content-type": "application/json" }, Buffer.from("{}"));
      expect(good.status).toBe(200);
    } finally {
      session.close();
    }
    await stillServes();
  });
});

describe("protocol sniffing", () => {
  it("routes a first segment of just 'P' by the bytes that follow it", async () => {
    const request = h1(HEALTH, `127.0.0.1:${t.server.port}`, { "Content-Type": "application/json" }, "{}");
    const res = await rawHttp(t.server.port, [request.subarray(0, 1), request.subarray(1)], 100);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ healthy: true });
  });

  it("routes the HTTP/2 preface sent byte by byte to HTTP/2", async () => {
    const socket = await connectRaw(t.server.port);
    const answer = readUntilClosed(socket, 5_000);
    for (const byte of Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) {
      socket.write(Buffer.of(byte));
      await new Promise((r) => setTimeout(r, 5));
    }
    // An HTTP/2 server answers the preface with its SETTINGS frame (type 0x4).
    await new Promise((r) => setTimeout(r, 200));
    socket.end();
    const bytes = await answer;
    expect(bytes.length).toBeGreaterThanOrEqual(9);
    expect(bytes[3]).toBe(0x04);
  });
});

describe("a body of 1-byte chunks", () => {
  const SIZE = 200_000;
  type Sent = { ms: number; status: number; grpcStatus?: string };

  /** Sends `body` over HTTP/1.1 as chunks of `chunkSize` bytes in one write and times the answer. */
  async function viaH1(path: string, contentType: string, body: Buffer, chunkSize: number): Promise<Sent> {
    const head = `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${contentType}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
    const bytes = Buffer.concat([Buffer.from(head), chunked(body, chunkSize)]);
    const started = performance.now();
    const res = await rawHttp(t.server.port, [bytes]);
    return { ms: performance.now() - started, status: res.status };
  }

  /** Sends `body` over HTTP/2 as DATA frames of `chunkSize` bytes and times the answer. */
  async function viaH2(path: string, contentType: string, body: Buffer, chunkSize: number): Promise<Sent> {
    const session = http2.connect(t.baseUrl);
    try {
      const started = performance.now();
      const answer = new Promise<Sent>((resolve, reject) => {
        const stream = session.request({ ":method": "POST", ":path": path, "content-type": contentType, te: "trailers" });
        let status = 0;
        let grpcStatus: string | undefined;
        stream.on("response", (h) => {
          status = Number(h[":status"]);
          grpcStatus ??= h["grpc-status"] as string | undefined;
        });
        stream.on("trailers", (h) => (grpcStatus = h["grpc-status"] as string));
        stream.on("data", () => {});
        stream.on("end", () => resolve({ ms: performance.now() - started, status, grpcStatus }));
        stream.on("error", reject);
        // Corked writes leave the session as one DATA frame each.
        stream.cork();
        for (let offset = 0; offset < body.length; offset += chunkSize) stream.write(body.subarray(offset, offset + chunkSize));
        stream.uncork();
        stream.end();
      });
      return await answer;
    } finally {
      session.close();
    }
  }

  /** VerifyToken latencies while `work` runs. */
  async function verifyLatencies(work: Promise<unknown>): Promise<number[]> {
    const { data } = clientsFor(t.baseUrl, "grpc", t.adminToken);
    const latencies: number[] = [];
    let done = false;
    void work.finally(() => (done = true));
    while (!done) {
      const started = performance.now();
      await data.verifyToken({ token: t.adminToken });
      latencies.push(performance.now() - started);
    }
    return latencies;
  }

  const jsonBody = () => Buffer.from(JSON.stringify({ pad: "x".repeat(SIZE - 11) }));
  const envelopedBody = () => envelope(paddedMessage(SIZE - 5));
  const REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
  const CASES = [
    // Connect unary: a bare message, collected once.
    { name: "Connect unary (HTTP/1.1)", send: viaH1, path: HEALTH, contentType: "application/json", body: jsonBody },
    // gRPC-Web and gRPC unary: one envelope, collected once.
    { name: "gRPC-Web unary (HTTP/1.1)", send: viaH1, path: HEALTH, contentType: "application/grpc-web+proto", body: envelopedBody },
    { name: "gRPC unary (HTTP/2)", send: viaH2, path: HEALTH, contentType: "application/grpc", body: envelopedBody },
    // A bidi stream (server reflection): envelopes re-cut from the frames as they arrive.
    { name: "gRPC bidi stream (HTTP/2)", send: viaH2, path: REFLECTION, contentType: "application/grpc", body: envelopedBody },
  ];

  it.each(CASES)("$name: reassembled in linear time while VerifyToken keeps answering", { timeout: 90_000 }, async ({ send, path, contentType, body }) => {
    const bytes = body();
    // Warm up, then the same body in one chunk.
    await send(path, contentType, bytes, bytes.length);
    const single = await send(path, contentType, bytes, bytes.length);
    // The same 1-byte chunks to REST, which has always read bodies linearly: what the HTTP parser itself
    // costs, and how long it holds the event loop. Everything below is relative to it, so machine load cancels out.
    const parser = send("/api/v1/api_keys/policies", "application/json", jsonBody(), 1);
    const parserLatencies = await verifyLatencies(parser);
    const tiny = send(path, contentType, bytes, 1);
    const latencies = await verifyLatencies(tiny);
    const { ms, status, grpcStatus } = await tiny;
    expect(status).toBeLessThan(500);
    expect(grpcStatus).not.toBe("13");
    // Quadratic reassembly took ~17 s here, 15× what parsing the chunks costs.
    expect(ms).toBeLessThan(500 * single.ms + 1_000);
    expect(ms).toBeLessThan(5 * (await parser).ms + 2_000);
    expect(latencies.length).toBeGreaterThan(0);
    expect(Math.max(...latencies)).toBeLessThan(3 * Math.max(...parserLatencies) + 1_000);
  });

  it("still refuses a chunked body over the size limit", async () => {
    const big = Buffer.from(JSON.stringify({ pad: "x".repeat(1024 * 1024 + 10) }));
    const res = await viaH1(HEALTH, "application/json", big, 1024);
    // Connect's resource_exhausted.
    expect(res.status).toBe(429);
  });
});

/** A message whose one unknown length-delimited field (number 15) pads it to `size` bytes. */
function paddedMessage(size: number): Uint8Array {
  // tag 15 wire type 2 = 0x7a, then a varint length, then the bytes.
  let payload = size - 1;
  for (;;) {
    const varint = encodeVarint(payload);
    if (1 + varint.length + payload === size) return Buffer.concat([Buffer.of(0x7a), varint, Buffer.alloc(payload, 0x61)]);
    payload--;
  }
}

function encodeVarint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

describe("a compressed-flag envelope without an encoding", () => {
  async function metricCount(method: string, code: string): Promise<number> {
    const text = await (await fetch(`${t.baseUrl}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`apikeys_rpc_requests_total{method="${method}",code="${code}"}`));
    return line === undefined ? 0 : Number(line.split(" ").pop());
  }

  it.each([
    ["unary", HEALTH],
    ["server-streaming", "/apikeys.v1.ApiKeysService/WatchInvalidations"],
  ])("%s: is invalid_argument for the client, the log and the metrics alike", async (_kind, path) => {
    const method = path.slice(1);
    const internalBefore = await metricCount(method, "internal");
    const session = http2.connect(t.baseUrl);
    try {
      for (const contentType of ["application/grpc", "application/grpc-web+proto"]) {
        const res = await h2Request(
          session,
          { ":method": "POST", ":path": path, "content-type": contentType, te: "trailers", authorization: `Bearer ${t.adminToken}` },
          envelope(Buffer.from([0x0a, 0x01, 0x61]), 0x01),
        );
        // gRPC: in the trailers; gRPC-Web: in the headers (trailers-only) or the trailer frame.
        const status = res.headers["grpc-status"] ?? /grpc-status:\s*(\d+)/.exec(res.body.toString("latin1"))?.[1];
        expect(status, contentType).toBe("3");
      }
    } finally {
      session.close();
    }
    expect(await metricCount(method, "internal")).toBe(internalBefore);
  });
});

describe("an over-long deadline", () => {
  /** Opens WatchInvalidations with `headers` and reports whether it is still open after `ms`. */
  async function openAfter(headers: http2.OutgoingHttpHeaders, ms: number): Promise<{ open: boolean; status?: string }> {
    const session = http2.connect(t.baseUrl);
    try {
      return await new Promise((resolve) => {
        const stream = session.request({
          ":method": "POST",
          ":path": "/apikeys.v1.ApiKeysService/WatchInvalidations",
          authorization: `Bearer ${t.adminToken}`,
          ...headers,
        });
        let status: string | undefined;
        stream.on("response", (h) => (status ??= h["grpc-status"] as string | undefined));
        stream.on("trailers", (h) => (status = h["grpc-status"] as string));
        stream.on("data", (chunk: Buffer) => (status ??= /grpc-status:\s*(\d+)/.exec(chunk.toString("latin1"))?.[1]));
        stream.on("error", () => {});
        stream.once("close", () => resolve({ open: false, status }));
        stream.end(envelope(new Uint8Array()));
        setTimeout(() => resolve({ open: !stream.closed, status }), ms);
      });
    } finally {
      session.destroy();
    }
  }

  it.each([
    ["gRPC 99999999H", { "content-type": "application/grpc", te: "trailers", "grpc-timeout": "99999999H" }],
    ["gRPC 99999999S", { "content-type": "application/grpc", te: "trailers", "grpc-timeout": "99999999S" }],
    ["gRPC-Web 99999999M", { "content-type": "application/grpc-web+proto", "grpc-timeout": "99999999M" }],
    ["Connect 9999999999 ms", { "content-type": "application/connect+proto", "connect-protocol-version": "1", "connect-timeout-ms": "9999999999" }],
  ])("%s is clamped to the longest deadline, not wrapped to 1 ms", async (_name, headers) => {
    const res = await openAfter(headers, 500);
    expect(res).toMatchObject({ open: true });
  });

  it("a short deadline still ends the stream", async () => {
    const res = await openAfter({ "content-type": "application/grpc", te: "trailers", "grpc-timeout": "100m" }, 2_000);
    // Ended by the deadline (the code it reports on streams is another matter: canceled today).
    expect(res.open).toBe(false);
    expect(res.status).not.toBe("0");
  });
});
