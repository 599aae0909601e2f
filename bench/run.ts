// `npm run bench`: drives the real server with real load generators and prints one
// table (also written to bench/results/latest.json). Every target is a ratio to a
// ceiling measured in the same run, because absolute figures on small shared
// machines are noise. See docs/performance.md.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { ApiKeysAdminService } from "../src/gen/apikeys/v1/admin_pb.js";
import { ApiKeysService, VerifyCode, VerifyTokenRequestSchema } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { createApiKeysClients, KeyVerifier } from "@apikeys/client";
import { generateToken } from "../src/tokens/token.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const SCALE_KEYS = Number(process.env.BENCH_SCALE_KEYS ?? 1_000_000);
const REVOCATION_TRIALS = Number(process.env.BENCH_REVOCATION_TRIALS ?? 200);
/** "warm": the warm rows alone; "cold": all but them. */
const ONLY = process.env.BENCH_ONLY;
/**
 * With two or more cores (and taskset), the servers run on core 0 and the load
 * generators on core 1, so that neither steals the other's core: on a 2-core
 * machine that turned ±20 % run-to-run swings into a few percent. BENCH_PIN=0 turns it off.
 */
const PIN = process.env.BENCH_PIN !== "0" && availableParallelism() >= 2 && hasTaskset();
const onCore = (core: number, command: string, args: string[]): [string, string[]] => (PIN ? ["taskset", ["-c", String(core), command, ...args]] : [command, args]);

function hasTaskset(): boolean {
  try {
    execFileSync("taskset", ["-c", "0", "true"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
const CONNECTIONS = 16;
const ROOT = new URL("..", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "apikeys-bench-"));

interface Row {
  name: string;
  rps?: number;
  p50?: number;
  p99?: number;
  ceiling?: string;
  ratio?: number;
  target?: string;
  pass?: boolean;
  note?: string;
  /** Requests the load generator saw fail; a row with any cannot pass. */
  failed?: number;
  /** h2load's per-request latencies (ms, sorted), for merging halves; not printed. */
  latencies?: number[];
}
const rows: Row[] = [];
const children: ChildProcess[] = [];

function ensureTools(): void {
  const missing = ["h2load", "wrk"].filter((tool) => {
    try {
      execFileSync("which", [tool], { stdio: "ignore" });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length === 0) return;
  const packages = missing.map((t) => (t === "h2load" ? "nghttp2-client" : t));
  console.error(`installing ${packages.join(", ")} from Debian`);
  execFileSync("apt-get", ["install", "-y", "-qq", ...packages], { stdio: "inherit", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
}

interface BenchServer {
  port: number;
  empty: number;
  generic: number;
  raw2: number;
  raw1: number;
  grpcjs: number;
  control: number;
}

async function startBenchServer(env: Record<string, string>): Promise<BenchServer> {
  const child = spawn(...onCore(0, process.execPath, ["--expose-gc", "--import", "tsx", "bench/bench-server.ts"]), {
    cwd: ROOT,
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  let out = "";
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const line = out.split("\n").find((l) => l.includes('"bench":"ready"'));
      if (line) resolve(JSON.parse(line) as BenchServer);
    });
    child.once("exit", (code) => reject(new Error(`bench server exited with ${code}: ${out}`)));
  });
}

async function control(server: BenchServer, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`http://127.0.0.1:${server.control}${path}`, {
    method: "POST",
    body: body === undefined ? undefined : typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** h2load over cleartext HTTP/2; latencies from its per-request log (µs → ms). */
function h2load(url: string, body: Uint8Array, headers: Record<string, string>, options: { conns?: number; streams?: number; seconds?: number } = {}): Row {
  const bodyFile = join(work, "body.bin");
  const logFile = join(work, "h2load.log");
  writeFileSync(bodyFile, body);
  rmSync(logFile, { force: true });
  const args = ["-c", String(options.conns ?? CONNECTIONS), "-m", String(options.streams ?? 1), "-D", String(options.seconds ?? SECONDS), "--warm-up-time=1", "-d", bodyFile, "--log-file", logFile];
  for (const [k, v] of Object.entries(headers)) args.push("-H", `${k}: ${v}`);
  const out = execFileSync(...onCore(1, "h2load", [...args, url]), { encoding: "utf8", maxBuffer: 1 << 24 });
  const rps = Number(/finished in [\d.]+s, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const status = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const failed = /requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const latencies = readFileSync(logFile, "utf8")
    .trim()
    .split("\n")
    .map((l) => Number(l.split("\t")[2]) / 1000)
    .filter((n) => Number.isFinite(n))
    .sort((a, b) => a - b);
  const bad = Number(status?.[3] ?? 0) + Number(status?.[4] ?? 0) + Number(failed?.[1] ?? 0) + Number(failed?.[2] ?? 0);
  return { name: "", rps, p50: percentile(latencies, 50), p99: percentile(latencies, 99), failed: bad, note: bad > 0 ? `${bad} failed` : undefined, latencies };
}

/**
 * Two h2load rows measured A B B A (the caller sets each run's length: half a row), every run after a
 * full collection in the bench server: a goal row and its ceiling then see the same
 * moments of a machine whose speed drifts, and neither pays for the other's garbage.
 * Each side's req/s is the mean of its halves; its percentiles are of both halves' latencies.
 */
async function abba(server: BenchServer, a: () => Row, b: () => Row): Promise<[Row, Row]> {
  const halves: Row[] = [];
  for (const run of [a, b, b, a]) {
    await control(server, "/gc");
    halves.push(run());
  }
  const merge = (x: Row, y: Row): Row => {
    const latencies = [...(x.latencies ?? []), ...(y.latencies ?? [])].sort((m, n) => m - n);
    const failed = (x.failed ?? 0) + (y.failed ?? 0);
    return { name: "", rps: ((x.rps ?? NaN) + (y.rps ?? NaN)) / 2, p50: percentile(latencies, 50), p99: percentile(latencies, 99), failed, note: failed > 0 ? `${failed} failed` : undefined };
  };
  return [merge(halves[0]!, halves[3]!), merge(halves[1]!, halves[2]!)];
}

/** wrk over HTTP/1.1 with a POST body. */
function wrk(url: string, body: string, headers: Record<string, string>): Row {
  const script = join(work, "post.lua");
  writeFileSync(
    script,
    [`wrk.method = "POST"`, `wrk.body = ${JSON.stringify(body)}`, ...Object.entries(headers).map(([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`)].join("\n"),
  );
  const out = execFileSync(...onCore(1, "wrk", ["-t1", `-c${CONNECTIONS}`, `-d${SECONDS}s`, "--latency", "-s", script, url]), { encoding: "utf8" });
  const ms = (s: string | undefined) => {
    const m = /([\d.]+)(us|ms|s)/.exec(s ?? "");
    if (!m) return NaN;
    return Number(m[1]) * (m[2] === "us" ? 0.001 : m[2] === "s" ? 1000 : 1);
  };
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  return {
    name: "",
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    p50: ms(/50%\s+(\S+)/.exec(out)?.[1]),
    p99: ms(/99%\s+(\S+)/.exec(out)?.[1]),
    failed: non2xx,
    note: non2xx > 0 ? `${non2xx} non-2xx` : undefined,
  };
}

function grpcFrame(message: Uint8Array): Uint8Array {
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  return frame;
}

/** One HTTP/2 POST, returning the response body (to feed the raw ceilings the same bytes). */
async function h2Body(url: string, body: Uint8Array, headers: Record<string, string>): Promise<Buffer> {
  const u = new URL(url);
  const session = http2.connect(u.origin);
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const req = session.request({ ":method": "POST", ":path": u.pathname, ...headers });
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve(Buffer.concat(chunks)));
      req.on("error", reject);
      req.end(body);
    });
  } finally {
    session.close();
  }
}

function compare(row: Row, name: string, ceiling: Row, ceilingName: string, min: number, by: "rps" = "rps"): void {
  row.name = name;
  row.ceiling = ceilingName;
  row.ratio = (row[by] ?? NaN) / (ceiling[by] ?? NaN);
  row.target = `≥ ${min}×`;
  row.pass = row.ratio >= min && !row.failed && !ceiling.failed;
}

async function main(): Promise<void> {
  ensureTools();
  mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
  const adminToken = generateToken("ak");
  let databaseUrl = process.env.DATABASE_URL;
  let dropDatabase = async () => {};
  const env: Record<string, string> = { APIKEYS_BOOTSTRAP_TOKEN: adminToken };
  if (databaseUrl) {
    const name = `apikeys_bench_${Date.now()}`;
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const base = databaseUrl;
    const url = new URL(base);
    url.pathname = `/${name}`;
    databaseUrl = url.toString();
    env.DATABASE_URL = databaseUrl;
    dropDatabase = async () => {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    };
  } else {
    env.APIKEYS_DATA_DIR = join(work, "data");
  }
  const backend = databaseUrl ? "postgres" : "pglite";
  console.log(`apikeys bench: ${backend}, ${SECONDS}s per row, ${CONNECTIONS} connections${PIN ? ", server on core 0, load on core 1" : ""}`);

  try {
    const a = await startBenchServer(env);
    const base = `http://127.0.0.1:${a.port}`;
    const transport = createGrpcTransport({ baseUrl: base, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${adminToken}`), next(req))] });
    const admin = createClient(ApiKeysAdminService, transport);
    const data = createClient(ApiKeysService, transport);
    await data.registerPermissions({ service: "bench", permissions: [{ name: "read", description: "read" }] });
    const verifierPolicy = await admin.adminCreateApiKeyPolicy({ name: "bench-verifier", permissions: ["apikeys:verify", "bench:read"] });
    const verifierToken = (await admin.adminCreateApiKey({ name: "bench-verifier", policyId: verifierPolicy.policy!.id })).token;
    const target = await admin.adminCreateApiKey({ name: "bench-target", policyId: verifierPolicy.policy!.id });
    const request = create(VerifyTokenRequestSchema, { token: target.token, allOf: ["bench:read"] });
    const check = await data.verifyToken(request);
    if (check.code !== VerifyCode.VALID) throw new Error("bench setup: target token does not verify");

    const auth = { authorization: `Bearer ${verifierToken}` };
    const grpcHeaders = { "content-type": "application/grpc", te: "trailers", ...auth };
    const protoHeaders = { "content-type": "application/proto", "connect-protocol-version": "1", ...auth };
    const jsonHeaders = { "content-type": "application/json", "connect-protocol-version": "1", ...auth };
    const verifyPath = "/apikeys.v1.ApiKeysService/VerifyToken";
    const emptyPath = "/bench.v1.BenchService/Empty";
    const binary = toBinary(VerifyTokenRequestSchema, request);
    const json = toJsonString(VerifyTokenRequestSchema, request);

    // Feed the raw ceilings the exact bytes the real server answers with.
    await control(a, "/fixed?kind=grpc", await h2Body(base + verifyPath, grpcFrame(binary), grpcHeaders));
    await control(a, "/fixed?kind=connectProto", await h2Body(base + verifyPath, binary, protoHeaders));
    const jsonAnswer = await (await fetch(base + verifyPath, { method: "POST", headers: jsonHeaders, body: json })).text();
    await control(a, "/fixed?kind=connectJson", jsonAnswer);
    const grpcAnswer = await h2Body(base + verifyPath, grpcFrame(binary), grpcHeaders);
    await control(a, "/grpc-key", { token: target.token, response: grpcAnswer.subarray(5).toString("base64") });

    // BENCH_ONLY=cold skips them (the cold and scale rows alone, for iterating on the cold path).
    if (ONLY !== "cold") {
      // 1–2. Warm VerifyToken against the empty RPC and the raw handlers, per protocol.
      const warmGrpc = h2load(base + verifyPath, grpcFrame(binary), grpcHeaders);
      const emptyGrpc = h2load(`http://127.0.0.1:${a.empty}${emptyPath}`, grpcFrame(new Uint8Array()), grpcHeaders);
      const rawGrpc = h2load(`http://127.0.0.1:${a.raw2}${verifyPath}`, grpcFrame(binary), grpcHeaders);
      // The goals against grpc-js, the rows at the line, are measured A B B A (see abba).
      const half = { seconds: Math.max(1, Math.round(SECONDS / 2)) };
      const multi = { ...half, conns: 4, streams: 10 };
      const [warmGrpcVsGrpcjs, grpcjs] = await abba(
        a,
        () => h2load(base + verifyPath, grpcFrame(binary), grpcHeaders, half),
        () => h2load(`http://127.0.0.1:${a.grpcjs}${verifyPath}`, grpcFrame(binary), grpcHeaders, half),
      );
      const [warmGrpcMulti, grpcjsMulti] = await abba(
        a,
        () => h2load(base + verifyPath, grpcFrame(binary), grpcHeaders, multi),
        () => h2load(`http://127.0.0.1:${a.grpcjs}${verifyPath}`, grpcFrame(binary), grpcHeaders, multi),
      );
      const warmProto = h2load(base + verifyPath, binary, protoHeaders);
      // h2load cannot send an empty body: an Empty message with one unknown field (15: 0) stands in.
      const emptyProto = h2load(`http://127.0.0.1:${a.empty}${emptyPath}`, new Uint8Array([0x78, 0x00]), protoHeaders);
      const rawProto = h2load(`http://127.0.0.1:${a.raw2}${verifyPath}`, binary, protoHeaders);
      const rawProtoAfterWrite = h2load(`http://127.0.0.1:${a.raw2}${verifyPath}`, binary, { ...protoHeaders, "x-raw-end": "after-write" });
      const warmJson = wrk(base + verifyPath, json, jsonHeaders);
      const genericBase = `http://127.0.0.1:${a.generic}`;
      const genericGrpc = h2load(genericBase + verifyPath, grpcFrame(binary), grpcHeaders);
      const genericGrpcMulti = h2load(genericBase + verifyPath, grpcFrame(binary), grpcHeaders, { conns: 4, streams: 10 });
      const genericProto = h2load(genericBase + verifyPath, binary, protoHeaders);
      const genericJson = wrk(genericBase + verifyPath, json, jsonHeaders);
      const emptyJson = wrk(`http://127.0.0.1:${a.empty}${emptyPath}`, "{}", jsonHeaders);
      const rawJson = wrk(`http://127.0.0.1:${a.raw1}${verifyPath}`, json, jsonHeaders);

      emptyGrpc.name = "empty RPC, gRPC h2c";
      rawGrpc.name = "raw node:http2, gRPC bytes";
      grpcjs.name = "@grpc/grpc-js, same lookup (16×1)";
      grpcjsMulti.name = "@grpc/grpc-js, same lookup (4×10)";
      emptyProto.name = "empty RPC, Connect proto h2c";
      rawProto.name = "raw node:http2, Connect bytes";
      emptyJson.name = "empty RPC, Connect JSON HTTP/1.1";
      rawJson.name = "raw node:http, JSON bytes";
      compare(warmGrpc, "warm VerifyToken, gRPC h2c", emptyGrpc, emptyGrpc.name, 0.9);
      rows.push(emptyGrpc, warmGrpc);
      const vsRawGrpc = { ...warmGrpc };
      compare(vsRawGrpc, "  … vs raw node:http2", rawGrpc, rawGrpc.name, 0.5);
      const vsGrpcjs = warmGrpcVsGrpcjs;
      compare(vsGrpcjs, "  … vs @grpc/grpc-js (16×1)", grpcjs, grpcjs.name, 1.0);
      vsGrpcjs.note = "A B B A with the peer";
      compare(warmGrpcMulti, "warm VerifyToken, gRPC h2c (4×10)", grpcjsMulti, grpcjsMulti.name, 1.0);
      warmGrpcMulti.note = "A B B A with the peer";
      rows.push(rawGrpc, vsRawGrpc, grpcjs, vsGrpcjs, grpcjsMulti, warmGrpcMulti);
      compare(warmProto, "warm VerifyToken, Connect proto h2c", emptyProto, emptyProto.name, 0.9);
      const vsRawProto = { ...warmProto };
      compare(vsRawProto, "  … vs raw node:http2", rawProto, rawProto.name, 0.5);
      rows.push(emptyProto, warmProto, rawProto, vsRawProto);
      // The same ceiling ending its stream the way the fast path does (see src/http/fast-path/wire.ts): no goal, for the record.
      rawProtoAfterWrite.name = "raw node:http2, Connect bytes, ended after the write";
      const vsRawProtoAfterWrite: Row = {
        ...warmProto,
        name: "  … vs that raw node:http2",
        ceiling: rawProtoAfterWrite.name,
        ratio: (warmProto.rps ?? NaN) / (rawProtoAfterWrite.rps ?? NaN),
        target: undefined,
        pass: undefined,
        note: "no goal: the ceiling with the fast path's way of ending",
      };
      rows.push(rawProtoAfterWrite, vsRawProtoAfterWrite);
      compare(warmJson, "warm VerifyToken, Connect JSON HTTP/1.1", emptyJson, emptyJson.name, 0.9);
      const vsRawJson = { ...warmJson };
      compare(vsRawJson, "  … vs raw node:http", rawJson, rawJson.name, 0.5);
      rows.push(emptyJson, warmJson, rawJson, vsRawJson);
      // Before/after in the same run: the same server's generic path (APIKEYS_FAST_PATH=0).
      for (const [row, name, fast] of [
        [genericGrpc, "generic path (fast path off), gRPC h2c", warmGrpc],
        [genericGrpcMulti, "generic path (fast path off), gRPC h2c (4×10)", warmGrpcMulti],
        [genericProto, "generic path (fast path off), Connect proto h2c", warmProto],
        [genericJson, "generic path (fast path off), Connect JSON HTTP/1.1", warmJson],
      ] as const) {
        row.name = name;
        row.ratio = (row.rps ?? NaN) / (fast.rps ?? NaN);
        row.note = `ratio: generic / fast path${row.note ? `; ${row.note}` : ""}`;
        rows.push(row);
      }
    }

    // BENCH_ONLY=warm: the warm rows alone (about a minute), for iterating on the hot path.
    if (ONLY !== "warm") {
      // SDK: a cached in-process verification (the KeyVerifier behind apiKeyAuth), on this one core.
      const sdkClients = createApiKeysClients({ baseUrl: base, token: verifierToken });
      const keyVerifier = new KeyVerifier({ client: sdkClients.apiKeys });
      // Warm only once the invalidation stream is up: its opening resync empties the cache.
      for (const deadline = Date.now() + 10_000; !keyVerifier.connected && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
      if (!(await keyVerifier.verify(target.token)).valid) throw new Error("bench setup: SDK does not accept the target token");
      // Warmed first, as a running service would be: the first 100,000 calls are the JIT's.
      for (let i = 0; i < 100_000; i++) await keyVerifier.verify(target.token);
      // The rate from calls with no clock around them; the latencies from a second loop timing each call
      // (a clock read pair costs ~0.1 µs here, a tenth of a call, which would otherwise count against the rate).
      const sdkCalls = 500_000;
      const remoteBefore = keyVerifier.remoteCalls;
      const sdkStart = performance.now();
      for (let i = 0; i < sdkCalls; i++) await keyVerifier.verify(target.token);
      const sdkSeconds = (performance.now() - sdkStart) / 1e3;
      const sdkLatencies = new Float64Array(200_000);
      for (let i = 0; i < sdkLatencies.length; i++) {
        const t0 = performance.now();
        await keyVerifier.verify(target.token);
        sdkLatencies[i] = performance.now() - t0;
      }
      const sdkRemote = keyVerifier.remoteCalls - remoteBefore;
      await keyVerifier.close();
      sdkLatencies.sort();
      const sdkRps = sdkCalls / sdkSeconds;
      const sdkP99 = percentile(Array.from(sdkLatencies), 99);
      rows.push({
        name: "SDK cached verify, in-process",
        rps: sdkRps,
        p50: percentile(Array.from(sdkLatencies), 50),
        p99: sdkP99,
        target: "p99 < 5 µs, ≥ 500k/s",
        pass: sdkP99 < 0.005 && sdkRps >= 500_000 && sdkRemote === 0,
        note: `${sdkRemote} remote calls; p99 ${(sdkP99 * 1000).toFixed(2)} µs`,
      });

      // 4. Malformed and unknown tokens: throughput and database lookups.
      for (const [label, token] of [
        ["malformed token", "ak_definitely-not-a-token"],
        ["unknown well-formed token", generateToken("ak")],
      ] as const) {
        const before = (await control(a, "/stats")).dbLookups as number;
        const row = h2load(base + verifyPath, grpcFrame(toBinary(VerifyTokenRequestSchema, create(VerifyTokenRequestSchema, { token }))), grpcHeaders);
        const lookups = ((await control(a, "/stats")).dbLookups as number) - before;
        row.name = `${label}, gRPC h2c`;
        row.note = `${lookups} DB lookups${row.note ? `; ${row.note}` : ""}`;
        if (label === "malformed token") {
          row.target = "0 DB lookups";
          row.pass = lookups === 0;
        }
        rows.push(row);
      }

      // 3. Cold VerifyToken vs the bare indexed SELECT through the same pool. The goal row: a key not
      // in the cache on a running instance (its policy known from other keys, as it nearly always is);
      // beside it, with nothing cached at all (Postgres: an instance with the cache off).
      const cold = databaseUrl ? await startBenchServer({ ...env, APIKEYS_CACHE_MAX_ENTRIES: "0" }) : a;
      const coldNote = databaseUrl ? "instance with the cache off: key, policy and consumer in one join" : "cache emptied before each call";
      const coldSequence = async (server: BenchServer, evict: "key" | "all" = "all") => {
        const n = 5000;
        const { select: sel, verify: ver } = await control(server, `/cold?n=${n}&evict=${evict}`, [target.token]);
        return { sel, ver, n };
      };
      if (databaseUrl) {
        const coldRpc = h2load(`http://127.0.0.1:${cold.port}${verifyPath}`, grpcFrame(binary), grpcHeaders);
        coldRpc.name = "cold VerifyToken RPC, gRPC h2c (cache off)";
        coldRpc.note = "DB-bound throughput";
        rows.push(coldRpc);
      }
      const sequenceRows = (sel: { elapsedMs: number; latencies: number[] }, ver: { elapsedMs: number; latencies: number[] }, n: number, name: string, note: string) => {
        const selSorted = [...sel.latencies].sort((x: number, y: number) => x - y);
        const verSorted = [...ver.latencies].sort((x: number, y: number) => x - y);
        const selRow: Row = { name: databaseUrl ? "bare indexed SELECT, prepared, same pool" : "bare indexed SELECT, same connection", rps: n / (sel.elapsedMs / 1000), p50: percentile(selSorted, 50), p99: percentile(selSorted, 99) };
        const verRow: Row = { name, rps: n / (ver.elapsedMs / 1000), p50: percentile(verSorted, 50), p99: percentile(verSorted, 99), note };
        return { selRow, verRow };
      };
      {
        const { sel, ver, n } = await coldSequence(a, "key");
        const { selRow, verRow } = sequenceRows(sel, ver, n, "cold verify, key not cached (policy known), in-process, sequential", "the key's entry evicted before each call");
        compare(verRow, verRow.name, selRow, "bare SELECT", 0.8);
        rows.push(selRow, verRow);
      }
      {
        const { sel, ver, n } = await coldSequence(cold);
        const { selRow, verRow } = sequenceRows(sel, ver, n, "cold verify, nothing cached, in-process, sequential", coldNote);
        verRow.ratio = (verRow.rps ?? NaN) / (selRow.rps ?? NaN);
        verRow.note = `${verRow.note}; ratio: vs the bare SELECT, no goal`;
        rows.push(selRow, verRow);
      }

      // 5. Revocation propagation between two instances on one Postgres.
      if (databaseUrl) {
        const b = await startBenchServer(env);
        const onB = createClient(ApiKeysService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${b.port}`, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${verifierToken}`), next(req))] }));
        const latencies: number[] = [];
        for (let i = 0; i < REVOCATION_TRIALS; i++) {
          const enabled = i % 2 === 1;
          if ((await onB.verifyToken(request)).valid !== !enabled) throw new Error("revocation bench: unexpected start state");
          const t0 = performance.now();
          await admin.adminUpdateApiKey({ id: target.apiKey!.id, enabled });
          while ((await onB.verifyToken(request)).valid !== enabled) {
            if (performance.now() - t0 > 5000) throw new Error("revocation did not propagate within 5 s");
          }
          latencies.push(performance.now() - t0);
        }
        await admin.adminUpdateApiKey({ id: target.apiKey!.id, enabled: true });
        latencies.sort((x, y) => x - y);
        const p99 = percentile(latencies, 99);
        rows.push({ name: `revocation A→B (${REVOCATION_TRIALS} trials)`, p50: percentile(latencies, 50), p99, target: "p99 < 50 ms", pass: p99 < 50, note: "from update sent on A to B refusing" });
      } else {
        rows.push({ name: "revocation A→B", note: "skipped: needs DATABASE_URL (PGlite is one process)" });
      }

      // 6. Scale: cold verify p99 with 10k keys, then with SCALE_KEYS keys.
      const scaleP99: number[] = [];
      let seeded = 0;
      for (const total of [10_000, SCALE_KEYS]) {
        const seed = await control(cold, "/seed", { from: seeded + 1, to: total, policyId: verifierPolicy.policy!.id });
        seeded = total;
        const { ver: v2 } = await coldSequence(cold);
        const sorted = [...v2.latencies].sort((x: number, y: number) => x - y);
        scaleP99.push(percentile(sorted, 99));
        rows.push({ name: `cold verify with ${total.toLocaleString("en")} keys`, p50: percentile(sorted, 50), p99: percentile(sorted, 99), note: `seeded in ${seed.seconds.toFixed(1)} s` });
      }
      const scaleRatio = scaleP99[1]! / scaleP99[0]!;
      rows.push({ name: `  … p99 ${SCALE_KEYS.toLocaleString("en")} / 10,000`, ratio: scaleRatio, target: "≤ 1.2", pass: scaleRatio <= 1.2 });

      // 7. Memory: RSS after caching 1M distinct keys under the default cap.
      const mem = await control(a, "/fill-cache?n=1000000");
      const growthMb = (mem.rssAfter - mem.rssBefore) / 2 ** 20;
      rows.push({
        name: "cache 1,000,000 distinct keys",
        target: "entries ≤ cap",
        pass: mem.entries <= mem.cap,
        note: `${mem.entries} entries (cap ${mem.cap}); heap +${((mem.heapAfter - mem.heapBefore) / 2 ** 20).toFixed(0)} MiB ≈ ${((mem.heapAfter - mem.heapBefore) / Math.max(1, mem.entries)).toFixed(0)} B/entry; RSS +${growthMb.toFixed(0)} MiB`,
      });
    }
  } finally {
    for (const child of children) child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 500));
    await dropDatabase();
    rmSync(work, { recursive: true, force: true });
  }

  const fmt = (n: number | undefined, d = 0) => (n === undefined || Number.isNaN(n) ? "" : n.toLocaleString("en", { maximumFractionDigits: d, minimumFractionDigits: d }));
  const table = [["row", "req/s", "p50 ms", "p99 ms", "ratio", "target", "", "note"]];
  for (const r of rows) table.push([r.name, fmt(r.rps), fmt(r.p50, 2), fmt(r.p99, 2), r.ratio === undefined ? "" : `${r.ratio.toFixed(2)}×`, r.target ?? "", r.pass === undefined ? "" : r.pass ? "PASS" : "FAIL", r.note ?? ""]);
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const row of table) console.log(row.map((cell, i) => (i >= 1 && i <= 4 ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join("  ").trimEnd());
  const result = { date: new Date().toISOString(), backend: process.env.DATABASE_URL ? "postgres" : "pglite", seconds: SECONDS, connections: CONNECTIONS, rows: rows.map(({ latencies: _, ...row }) => row) };
  writeFileSync(join(ROOT, "bench", "results", "latest.json"), `${JSON.stringify(result, null, 2)}\n`);
  console.log("\nwritten to bench/results/latest.json");
}

await main();
