// REST as HTTP clients expect it: HEAD on every GET route, compressed request
// bodies per Content-Encoding (the size limit applied after decompression).
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import http2 from "node:http2";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SERVICES } from "../src/server.js";
import { httpRoutes } from "../src/transcoding/http-rules.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t.stop());

const UUID = "00000000-0000-4000-8000-000000000000";

function post(path: string, body: Uint8Array, headers: Record<string, string>) {
  return fetch(`${t.baseUrl}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/json", ...headers },
    body,
  });
}

describe("HEAD", () => {
  const getPaths = httpRoutes([...SERVICES])
    .filter((r) => r.httpMethod === "GET")
    .map((r) => r.template.source.replace(/\{[^}]*\}/g, UUID));

  it.each(getPaths)("HEAD %s answers GET's status and headers without a body", async (path) => {
    const headers = { authorization: `Bearer ${t.adminToken}` };
    const get = await fetch(`${t.baseUrl}${path}`, { headers });
    const getBody = await get.arrayBuffer();
    const head = await fetch(`${t.baseUrl}${path}`, { method: "HEAD", headers });
    expect(head.status).toBe(get.status);
    expect(head.headers.get("content-type")).toBe("application/json");
    // Admin reads are audited, so the audit log grows by the GET itself.
    if (path.endsWith("/audit_events")) expect(Number(head.headers.get("content-length"))).toBeGreaterThan(0);
    else expect(head.headers.get("content-length")).toBe(String(getBody.byteLength));
    expect((await head.arrayBuffer()).byteLength).toBe(0);
  });

  it("sends no DATA over HTTP/2 either", async () => {
    const session = http2.connect(t.baseUrl);
    try {
      const { status, length, received } = await new Promise<{ status: number; length: string; received: number }>((resolve, reject) => {
        const stream = session.request({ ":method": "HEAD", ":path": "/api/v1/api_keys/policies", authorization: `Bearer ${t.adminToken}` });
        let received = 0;
        let status = 0;
        let length = "";
        stream.on("response", (h) => {
          status = Number(h[":status"]);
          length = String(h["content-length"]);
        });
        stream.on("data", (chunk: Buffer) => (received += chunk.length));
        stream.on("end", () => resolve({ status, length, received }));
        stream.on("error", reject);
        stream.end();
      });
      expect(status).toBe(200);
      expect(Number(length)).toBeGreaterThan(0);
      expect(received).toBe(0);
    } finally {
      session.close();
    }
  });

  it("is refused with 405 on a route that has no GET", async () => {
    const res = await fetch(`${t.baseUrl}/api/v1/api_keys/verify`, { method: "HEAD", headers: { authorization: `Bearer ${t.adminToken}` } });
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("POST");
  });
});

describe("Content-Encoding of request bodies", () => {
  const policy = (name: string) => Buffer.from(JSON.stringify({ name, permissions: ["apikeys:verify"] }));

  it("accepts gzip and br bodies", async () => {
    const gzip = await post("/api/v1/api_keys/policies", zlib.gzipSync(policy("gzipped")), { "content-encoding": "gzip" });
    expect(gzip.status).toBe(200);
    expect(((await gzip.json()) as { policy: { name: string } }).policy.name).toBe("gzipped");
    const br = await post("/api/v1/api_keys/policies", zlib.brotliCompressSync(policy("brotli")), { "content-encoding": "br" });
    expect(br.status).toBe(200);
    expect(((await br.json()) as { policy: { name: string } }).policy.name).toBe("brotli");
  });

  it("accepts a gzip body sent by curl", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "apikeys-rest-")), "body.json.gz");
    writeFileSync(file, zlib.gzipSync(policy("curled")));
    const { stdout } = await promisify(execFile)("curl", [
      "-sS",
      "-H",
      `Authorization: Bearer ${t.adminToken}`,
      "-H",
      "Content-Type: application/json",
      "-H",
      "Content-Encoding: gzip",
      "--data-binary",
      `@${file}`,
      `${t.baseUrl}/api/v1/api_keys/policies`,
    ]);
    expect((JSON.parse(stdout) as { policy: { name: string } }).policy.name).toBe("curled");
  });

  it("refuses an unknown coding with 415 and says which it accepts", async () => {
    const res = await post("/api/v1/api_keys/policies", policy("zstd"), { "content-encoding": "zstd" });
    expect(res.status).toBe(415);
    expect(res.headers.get("accept-encoding")).toBe("gzip, br");
    expect(((await res.json()) as { message: string }).message).toMatch(/unsupported Content-Encoding "zstd"/);
  });

  it("refuses a body that is not what its coding says with 400", async () => {
    const res = await post("/api/v1/api_keys/policies", policy("plain"), { "content-encoding": "gzip" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(/not valid gzip/);
  });

  it("applies the size limit to the decompressed body: a zip bomb is 413", async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(8 * 1024 * 1024, 0x20));
    expect(bomb.length).toBeLessThan(64 * 1024);
    const res = await post("/api/v1/api_keys/policies", bomb, { "content-encoding": "gzip" });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { message: string }).message).toMatch(/exceeds 1048576 bytes once decompressed/);
  });
});
