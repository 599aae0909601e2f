// Profiles warm VerifyToken over gRPC h2c (load generator on core 1; run the server with `taskset -c 0`): `node --cpu-prof --cpu-prof-dir=DIR --import tsx bench/profile-warm.ts`
// starts the real server in-process (embedded database in memory), drives it with h2load
// (or Connect binary with BENCH_PROTOCOL=proto, or wrk, Connect JSON, with BENCH_PROTOCOL=json) for BENCH_SECONDS (default 8) and exits; open the .cpuprofile in DevTools. Not part of the service.
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { readConfig } from "../src/config.js";
import { ApiKeysAdminService } from "../src/gen/apikeys/v1/admin_pb.js";
import { ApiKeysService, VerifyTokenRequestSchema } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { createLogger } from "../src/logger.js";
import { startServer } from "../src/server.js";
import { generateToken } from "../src/tokens/token.js";

const adminToken = generateToken("ak");
const config = readConfig({ ...process.env, PORT: "0", HOST: "127.0.0.1", APIKEYS_DATA_DIR: process.env.BENCH_DATA_DIR ?? "memory://", APIKEYS_BOOTSTRAP_TOKEN: adminToken, LOG_LEVEL: "warn" });
const server = await startServer(config, createLogger(config.logLevel));
const base = `http://127.0.0.1:${server.port}`;
const transport = createGrpcTransport({ baseUrl: base, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${adminToken}`), next(req))] });
const admin = createClient(ApiKeysAdminService, transport);
await createClient(ApiKeysService, transport).registerPermissions({ service: "bench", permissions: [{ name: "read", description: "read" }] });
const policy = await admin.adminCreateApiKeyPolicy({ name: "bench-verifier", permissions: ["apikeys:verify", "bench:read"] });
const verifierToken = (await admin.adminCreateApiKey({ name: "bench-verifier", policyId: policy.policy!.id })).token;
const target = await admin.adminCreateApiKey({ name: "bench-target", policyId: policy.policy!.id });
const message = toBinary(VerifyTokenRequestSchema, create(VerifyTokenRequestSchema, { token: target.token, allOf: ["bench:read"] }));
const frame = Buffer.alloc(5 + message.length);
frame.writeUInt32BE(message.length, 1);
frame.set(message, 5);
const bodyFile = join(mkdtempSync(join(tmpdir(), "apikeys-prof-")), "body.bin");
// BENCH_PROTOCOL=proto: Connect binary over h2c (the bare message, no envelope).
const proto = process.env.BENCH_PROTOCOL === "proto";
writeFileSync(bodyFile, proto ? message : frame);
const seconds = process.env.BENCH_SECONDS ?? "8";
const url = `${base}/apikeys.v1.ApiKeysService/VerifyToken`;
// BENCH_HEAP_PROFILE=FILE: also samples what the server allocates during the load (collected objects included) into FILE (.heapprofile, DevTools' Memory tab);
// BENCH_HEAP_LIVE=1 keeps only what is still alive at the end, BENCH_HEAP_PROMOTED=1 with it what outlived young-generation collections.
// BENCH_CONNECTIONS and BENCH_STREAMS (h2 only; default 16 and 1) set h2load's -c and -m, e.g. 4 and 10 for the bench's 4×10 row.
const heapProfile = process.env.BENCH_HEAP_PROFILE;
const inspector = heapProfile === undefined ? undefined : new (await import("node:inspector/promises")).Session();
if (inspector !== undefined) {
  inspector.connect();
  await inspector.post("HeapProfiler.startSampling", { samplingInterval: 1024, includeObjectsCollectedByMajorGC: process.env.BENCH_HEAP_LIVE !== "1" || process.env.BENCH_HEAP_PROMOTED === "1", includeObjectsCollectedByMinorGC: process.env.BENCH_HEAP_LIVE !== "1" });
}
// This process's CPU time per request (user + system; the load generator is another process), steadier than req/s on a shared machine.
const cpuBefore = process.cpuUsage();
const perRequest = (requests: number) => {
  const { user, system } = process.cpuUsage(cpuBefore);
  return `server CPU per request: ${(user / requests).toFixed(1)} µs user + ${(system / requests).toFixed(1)} µs system\n`;
};
if (process.env.BENCH_PROTOCOL === "json") {
  // Connect JSON over HTTP/1.1 with wrk.
  const script = join(bodyFile, "..", "post.lua");
  const json = toJsonString(VerifyTokenRequestSchema, create(VerifyTokenRequestSchema, { token: target.token, allOf: ["bench:read"] }));
  writeFileSync(script, [`wrk.method = "POST"`, `wrk.body = ${JSON.stringify(json)}`, `wrk.headers["content-type"] = "application/json"`, `wrk.headers["authorization"] = "Bearer ${verifierToken}"`].join("\n"));
  const { stdout } = await promisify(execFile)("taskset", ["-c", "1", "wrk", "-t1", "-c16", `-d${seconds}s`, "--latency", "-s", script, url]);
  process.stdout.write(stdout);
  process.stdout.write(perRequest(Number(/(\d+) requests in/.exec(stdout)?.[1] ?? NaN)));
} else {
  const { stdout } = await promisify(execFile)("taskset", ["-c", "1", "h2load",
    ...["-c", process.env.BENCH_CONNECTIONS ?? "16", "-m", process.env.BENCH_STREAMS ?? "1", "-D", seconds, "--warm-up-time=1", "-d", bodyFile],
    ...(proto ? ["-H", "content-type: application/proto"] : ["-H", "content-type: application/grpc", "-H", "te: trailers"]),
    ...["-H", `authorization: Bearer ${verifierToken}`],
    url,
  ]);
  process.stdout.write(stdout.split("\n").filter((l) => /finished in|status codes/.test(l)).join("\n") + "\n");
  process.stdout.write(perRequest(Number(/requests: (\d+) total/.exec(stdout)?.[1] ?? NaN)));
}
if (inspector !== undefined && heapProfile !== undefined) {
  const { profile } = await inspector.post("HeapProfiler.stopSampling");
  writeFileSync(heapProfile, JSON.stringify(profile));
}
await server.stop();
process.exit(0);
