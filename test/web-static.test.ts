import http from "node:http";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { HttpHandler } from "../src/http/handler.js";
import { dashboardHandler } from "../src/http/dashboard.js";

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A raw request: unlike fetch, node:http sends the path exactly as given (no dot-segment folding). */
function request(port: number, path: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return requestRaw(port, path, init).then((r) => ({ ...r, body: r.body.toString() }));
}

function requestRaw(
  port: number,
  path: string,
  init: { method?: string; headers?: Record<string, string> } = {},
): Promise<Omit<Reply, "body"> & { body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, method: init.method ?? "GET", headers: init.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Serves `handler` the way the server's fallback does: unanswered requests get a JSON 404. */
async function serve(handler: HttpHandler): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    void Promise.resolve(handler(req, res)).then((answered) => {
      if (answered) return;
      res.writeHead(404, { "content-type": "application/json" });
      res.end('{"code":5}');
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const HTML = { accept: "text/html,application/xhtml+xml,*/*;q=0.8" };
const BUNDLE = Array.from({ length: 2000 }, (_, i) => `export const value${i} = "${i.toString(36)}";`).join("\n");

describe("dashboard static files", () => {
  let dir: string;
  let port: number;
  let close: () => Promise<void>;

  beforeAll(async () => {
    const base = await mkdtemp(join(tmpdir(), "apikeys-web-"));
    dir = join(base, "web");
    await mkdir(join(dir, "assets"), { recursive: true });
    await writeFile(join(dir, "index.html"), "<!doctype html><title>dash</title>");
    await writeFile(join(dir, "favicon.svg"), "<svg/>");
    await writeFile(join(dir, "assets", "index-abc123.js"), "console.log(1)");
    await writeFile(join(dir, "assets", "index-abc123.css"), "body{}");
    await writeFile(join(dir, "assets", "bundle-def456.js"), BUNDLE);
    // The copies scripts/compress-web.mjs writes at build time.
    await writeFile(join(dir, "assets", "bundle-def456.js.br"), brotliCompressSync(BUNDLE));
    await writeFile(join(dir, "assets", "bundle-def456.js.gz"), gzipSync(BUNDLE));
    // A file beside the served directory that traversal must never reach.
    await writeFile(join(base, "secret.txt"), "top secret");
    ({ port, close } = await serve(dashboardHandler(dir)));
  });

  afterAll(async () => {
    await close();
    await rm(join(dir, ".."), { recursive: true, force: true });
  });

  it("serves index.html at / with security headers and revalidation", async () => {
    const res = await request(port, "/", { headers: HTML });
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(res.headers["cache-control"]).toBe("no-cache");
    expect(res.headers["content-security-policy"]).toContain("default-src 'self'");
    expect(res.headers["x-content-type-options"]).toBe("nosniff");
    expect(res.body).toContain("<title>dash</title>");
  });

  it("serves index.html at / whatever the Accept header says (curl, probes)", async () => {
    for (const headers of [{}, { accept: "*/*" }] as Record<string, string>[]) {
      const res = await request(port, "/", { headers });
      expect(res.status, JSON.stringify(headers)).toBe(200);
      expect(res.body).toContain("<title>dash</title>");
    }
  });

  it("serves hashed assets with their content type and as immutable", async () => {
    const js = await request(port, "/assets/index-abc123.js");
    expect(js.status).toBe(200);
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(js.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(js.body).toBe("console.log(1)");
    const css = await request(port, "/assets/index-abc123.css");
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");
    const svg = await request(port, "/favicon.svg");
    expect(svg.headers["content-type"]).toBe("image/svg+xml");
    expect(svg.headers["cache-control"]).toBe("no-cache");
  });

  it("answers 304 to a matching If-None-Match and HEAD without a body", async () => {
    const first = await request(port, "/assets/index-abc123.js");
    const etag = first.headers.etag;
    expect(etag).toMatch(/^".+"$/);
    const again = await request(port, "/assets/index-abc123.js", { headers: { "if-none-match": etag! } });
    expect(again.status).toBe(304);
    expect(again.body).toBe("");
    const head = await request(port, "/assets/index-abc123.js", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe(String("console.log(1)".length));
    expect(head.body).toBe("");
  });

  it("serves the build's precompressed copies: brotli when accepted, else gzip, else identity; one ETag per encoding", async () => {
    const path = "/assets/bundle-def456.js";
    const br = await requestRaw(port, path, { headers: { "accept-encoding": "gzip, deflate, br" } });
    expect(br.headers["content-encoding"]).toBe("br");
    expect(br.headers.vary).toBe("accept-encoding");
    expect(br.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(Number(br.headers["content-length"])).toBe(br.body.length);
    expect(br.body.length).toBeLessThan(BUNDLE.length / 4);
    expect(brotliDecompressSync(br.body).toString()).toBe(BUNDLE);

    const gz = await requestRaw(port, path, { headers: { "accept-encoding": "gzip" } });
    expect(gz.headers["content-encoding"]).toBe("gzip");
    expect(gunzipSync(gz.body).toString()).toBe(BUNDLE);

    for (const acceptEncoding of [undefined, "identity", "br;q=0, gzip;q=0"]) {
      const plain = await requestRaw(port, path, { headers: acceptEncoding === undefined ? {} : { "accept-encoding": acceptEncoding } });
      expect(plain.headers["content-encoding"], acceptEncoding).toBeUndefined();
      expect(plain.body.toString()).toBe(BUNDLE);
    }
    const etags = new Set([br.headers.etag, gz.headers.etag, (await request(port, path)).headers.etag]);
    expect(etags.size).toBe(3);
    const revalidated = await request(port, path, { headers: { "accept-encoding": "br", "if-none-match": br.headers.etag! } });
    expect(revalidated.status).toBe(304);
    expect((await request(port, path, { headers: { "if-none-match": br.headers.etag! } })).status).toBe(200);

    // Without copies (too small to gain, or built without them): sent as is.
    const small = await request(port, "/assets/index-abc123.js", { headers: { "accept-encoding": "br, gzip" } });
    expect(small.headers["content-encoding"]).toBeUndefined();
    expect(small.headers.vary).toBeUndefined();
  });

  it("falls back to index.html for client routes that ask for HTML", async () => {
    for (const path of ["/keys", "/policies", "/some/deep/route?x=1"]) {
      const res = await request(port, path, { headers: HTML });
      expect(res.status, path).toBe(200);
      expect(res.body, path).toContain("<title>dash</title>");
    }
  });

  it("passes on what is not its own: API paths, non-HTML requests, missing files, other methods", async () => {
    const cases: [string, { method?: string; headers?: Record<string, string> }][] = [
      ["/api/v1/api_keys", { headers: HTML }],
      ["/keys", { headers: { accept: "application/json" } }],
      ["/assets/missing-123.js", { headers: HTML }],
      ["/missing.png", { headers: HTML }],
      ["/", { method: "POST", headers: HTML }],
      ["/index.html", { method: "DELETE" }],
    ];
    for (const [path, init] of cases) {
      const res = await request(port, path, init);
      expect(res.status, `${init.method ?? "GET"} ${path}`).toBe(404);
      expect(res.headers["content-type"]).toBe("application/json");
    }
  });

  it("never serves files outside its directory", async () => {
    for (const path of [
      "/../secret.txt",
      "/assets/../../secret.txt",
      "/%2e%2e/secret.txt",
      "/%2e%2e%2fsecret.txt",
      "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
      "/..%5csecret.txt",
      "/%00/index.html",
      "/%E0%A4%A",
    ]) {
      const res = await request(port, path, { headers: HTML });
      expect(res.body, path).not.toContain("top secret");
      expect(res.status, path).toBe(404);
    }
  });

  it("explains how to build when the build is missing", async () => {
    const empty = await mkdtemp(join(tmpdir(), "apikeys-web-empty-"));
    const bare = await serve(dashboardHandler(empty));
    try {
      const res = await request(bare.port, "/", { headers: HTML });
      expect(res.status).toBe(503);
      expect(res.body).toContain("npm run build");
    } finally {
      await bare.close();
      await rm(empty, { recursive: true, force: true });
    }
  });
});
