import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Answer } from "../src/http/fast-path/wire.js";
import { writeH1Soon } from "../src/http/fast-path/wire.js";

/*
 * HTTP/1.1 answers of the fast path are written in the check phase of the turn that
 * made them, together: each one is written, in full, and one that cannot be written
 * does not keep the others from going out.
 */

const answer = (body: string, headers: Record<string, string> = {}): Answer => ({
  status: 200,
  headers: { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)), ...headers },
  body: Buffer.from(body),
  trailers: undefined,
});

let server: http.Server;
let port: number;
const seen: { sentAtOnce: boolean; sentAfterImmediate?: boolean }[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.once("end", () => {
      const bad = req.url === "/bad";
      // An invalid header value makes writeHead throw: that response alone is destroyed.
      writeH1Soon(res, answer(`{"url":"${req.url}"}`, bad ? { "x-bad": "a\nb" } : {}));
      const record: (typeof seen)[number] = { sentAtOnce: res.headersSent };
      seen.push(record);
      setImmediate(() => (record.sentAfterImmediate = res.headersSent));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const post = (path: string) =>
  new Promise<{ status: number; body: string } | "reset">((resolve) => {
    const req = http.request({ port, host: "127.0.0.1", path, method: "POST", agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", () => resolve("reset"));
    });
    req.on("error", () => resolve("reset"));
    req.end("{}");
  });

describe("writeH1Soon", () => {
  it("writes every answer in the check phase, and a failing one does not stop the rest", async () => {
    const paths = ["/a", "/b", "/bad", "/c", "/d"];
    const results = await Promise.all(paths.map(post));
    expect(results).toEqual([
      { status: 200, body: '{"url":"/a"}' },
      { status: 200, body: '{"url":"/b"}' },
      "reset",
      { status: 200, body: '{"url":"/c"}' },
      { status: 200, body: '{"url":"/d"}' },
    ]);
    expect(seen).toHaveLength(5);
    expect(seen.every((s) => !s.sentAtOnce)).toBe(true);
    expect(seen.filter((s) => s.sentAfterImmediate).length).toBe(4);
  });
});
