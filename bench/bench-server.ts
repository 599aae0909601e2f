// The process under test: the real apikeys server plus, in the same process and on
// the same listener code, the ceilings it is compared with. Prints one JSON line
// with its ports when ready. Started by bench/run.ts; not part of the service.
import { createHash } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import { create, createFileRegistry, type DescMethodUnary, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type EmptySchema, FileDescriptorProtoSchema, file_google_protobuf_empty } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { sql } from "kysely";
import { readConfig } from "../src/config.js";
import { VerifyTokenRequestSchema, VerifyTokenResponseSchema, VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { listen } from "../src/http/listener.js";
import { createLogger } from "../src/logger.js";
import { CallLog, requestLogInterceptor } from "../src/interceptors/request-log.js";
import { adminExtras, adminRoutes, dataRoutes, planeHandler } from "../src/routes/planes.js";
import { startServer } from "../src/server.js";
import { hashToken } from "../src/tokens/token.js";
import type { KeyRecord } from "../src/keys/key-record.js";
import { VerdictCache } from "../src/verify/verdict-cache.js";

const config = readConfig();
const logger = createLogger(config.logLevel);
const server = await startServer(config, logger);
const { db, verifier, prepared } = server.ctx;

// An RPC that does nothing, defined at run time so the service's contract stays clean.
const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "bench/v1/bench.proto",
    package: "bench.v1",
    syntax: "proto3",
    dependency: ["google/protobuf/empty.proto"],
    service: [{ name: "BenchService", method: [{ name: "Empty", inputType: ".google.protobuf.Empty", outputType: ".google.protobuf.Empty" }] }],
  }),
  (name) => (name === "google/protobuf/empty.proto" ? file_google_protobuf_empty : undefined),
);
const BenchService = registry.getService("bench.v1.BenchService")!;
const emptyMethod = BenchService.methods[0] as DescMethodUnary<typeof EmptySchema, typeof EmptySchema>;
const emptyRoutes = (router: ConnectRouter) => router.rpc(emptyMethod, async () => ({}));
// The same server's routes on the same app context with the fast path off (APIKEYS_FAST_PATH=0): the generic path, for before/after in one run.
const genericCtx = { ...server.ctx, limits: { ...server.ctx.limits, fastPath: false } };
const generic = await listen(
  planeHandler(genericCtx, (r) => (dataRoutes(genericCtx)(r), adminRoutes(genericCtx)(r)), adminExtras(genericCtx)),
  0,
  "127.0.0.1",
  config.http.limits,
);
const empty = await listen(connectNodeAdapter({ routes: emptyRoutes, interceptors: [requestLogInterceptor(new CallLog(logger))] }), 0, "127.0.0.1", config.http.limits);

// Raw node:http2 / node:http handlers answering with fixed bytes given by the driver.
const fixed = { grpc: Buffer.alloc(0), connectProto: Buffer.alloc(0), connectJson: Buffer.alloc(0) };
const raw2 = http2.createServer();
raw2.on("stream", (stream, headers) => {
  stream.on("data", () => {});
  stream.on("end", () => {
    if (String(headers["content-type"]).startsWith("application/grpc")) {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(fixed.grpc);
    } else if (headers["x-raw-end"] === "after-write") {
      // As the fast path ends a Connect answer: body first, END_STREAM once it is written.
      stream.respond({ ":status": 200, "content-type": "application/proto" });
      stream.write(fixed.connectProto, (err) => err == null && stream.end());
    } else {
      stream.respond({ ":status": 200, "content-type": "application/proto" });
      stream.end(fixed.connectProto);
    }
  });
});
const raw1 = http.createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(fixed.connectJson);
  });
});
await Promise.all([
  new Promise<void>((r) => raw2.listen(0, "127.0.0.1", r)),
  new Promise<void>((r) => raw1.listen(0, "127.0.0.1", r)),
]);

// The peer a user would pick instead: @grpc/grpc-js serving the same lookup (SHA-256 + Map).
const grpcKeys = new Map<string, Uint8Array>();
const grpcServer = new grpc.Server();
grpcServer.addService(
  {
    verifyToken: {
      path: "/apikeys.v1.ApiKeysService/VerifyToken",
      requestStream: false,
      responseStream: false,
      requestSerialize: (v: Uint8Array) => Buffer.from(v),
      requestDeserialize: (b: Buffer) => fromBinary(VerifyTokenRequestSchema, b),
      responseSerialize: (v: Uint8Array) => Buffer.from(v),
      responseDeserialize: (b: Buffer) => b,
    },
  },
  {
    verifyToken: (call: grpc.ServerUnaryCall<{ token: string }, Uint8Array>, callback: grpc.sendUnaryData<Uint8Array>) => {
      const hash = createHash("sha256").update(call.request.token).digest("base64");
      callback(null, grpcKeys.get(hash) ?? toBinary(VerifyTokenResponseSchema, create(VerifyTokenResponseSchema, { code: VerifyCode.NOT_FOUND })));
    },
  },
);
const grpcPort = await new Promise<number>((resolve, reject) =>
  grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
);

// Control endpoints for the driver: fixed bytes, counters, the bare query, memory.
const control = http.createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://x");
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    void (async () => {
      const body = Buffer.concat(chunks);
      switch (url.pathname) {
        case "/fixed":
          fixed[url.searchParams.get("kind") as keyof typeof fixed] = body;
          break;
        case "/grpc-key": {
          const { token, response } = JSON.parse(body.toString()) as { token: string; response: string };
          grpcKeys.set(createHash("sha256").update(token).digest("base64"), Buffer.from(response, "base64"));
          break;
        }
        case "/gc": {
          // A full collection between load rows, so that no row pays for the garbage of the one before it.
          const t0 = performance.now();
          global.gc?.();
          res.end(JSON.stringify({ ms: performance.now() - t0 }));
          return;
        }
        case "/stats":
          res.end(JSON.stringify({ dbLookups: verifier.dbLookups, cacheSize: verifier.cache.size, rss: process.memoryUsage().rss }));
          return;
        case "/cold": {
          // The bare indexed lookup through the same pool against a cold verification, interleaved in
          // blocks of 50 so that both see the same moments of a noisy machine; n of each.
          // evict=key: only the key's own entries go before each verification, so its policy stays known
          // (what a key not seen yet meets on a running instance); evict=all: the whole cache.
          const n = Number(url.searchParams.get("n") ?? 1000);
          const onlyKey = url.searchParams.get("evict") === "key";
          const tokens = JSON.parse(body.toString()) as string[];
          const ids = await Promise.all(tokens.map(async (token) => (await verifier.verify(token, [], [])).key?.id));
          const select = { elapsedMs: 0, latencies: [] as number[] };
          const verify = { elapsedMs: 0, latencies: [] as number[] };
          for (let done = 0; done < n; done += 50) {
            for (let i = done; i < Math.min(n, done + 50); i++) {
              const t0 = performance.now();
              const hash = hashToken(tokens[i % tokens.length]!, config.tokens.pepper);
              // The best a bare lookup can do through the same pool: a prepared statement on Postgres.
              if (prepared) await prepared("bench_bare_select", "select id, policy_id, enabled from api_keys where token_hash = $1", [hash]);
              else await db.selectFrom("api_keys").select(["id", "policy_id", "enabled"]).where("token_hash", "=", hash).executeTakeFirst();
              select.latencies.push(performance.now() - t0);
            }
            for (let i = done; i < Math.min(n, done + 50); i++) {
              const id = ids[i % tokens.length];
              if (onlyKey && id !== undefined) verifier.cache.invalidateKey(id);
              else verifier.cache.clear();
              const t0 = performance.now();
              await verifier.verify(tokens[i % tokens.length]!, [], []);
              verify.latencies.push(performance.now() - t0);
            }
          }
          select.elapsedMs = select.latencies.reduce((x, y) => x + y, 0);
          verify.elapsedMs = verify.latencies.reduce((x, y) => x + y, 0);
          res.end(JSON.stringify({ select, verify }));
          return;
        }
        case "/fill-cache": {
          // RSS with the default cap after inserting n distinct entries shaped like real ones.
          const n = Number(url.searchParams.get("n") ?? 1_000_000);
          const cache = new VerdictCache(config.cache.maxEntries);
          global.gc?.();
          const before = process.memoryUsage();
          const now = new Date();
          for (let i = 0; i < n; i++) {
            const record: KeyRecord = {
              id: crypto.randomUUID(),
              name: `key-${i}`,
              enabled: true,
              start: "ak_Abcd",
              createdOn: now,
              updatedOn: now,
              lastUsedOn: null,
              createdBy: null,
              description: "",
              metadata: {},
              expiresOn: null,
              allowedCidrs: ["0.0.0.0/0", "::/0"],
              environment: {},
              rateLimit: null,
              remaining: null,
              refill: null,
              credentialType: "token",
              consumer: null,
              policy: { id: `p${i % 100}`, name: `policy-${i % 100}`, description: "", createdOn: now, updatedOn: now, createdBy: null, permissions: ["svc:read", "svc:write"] },
            };
            cache.set(createHash("sha256").update(String(i)).digest("base64"), record, 60_000, cache.currentGeneration());
          }
          global.gc?.();
          const after = process.memoryUsage();
          res.end(
            JSON.stringify({
              entries: cache.size,
              cap: config.cache.maxEntries,
              rssBefore: before.rss,
              rssAfter: after.rss,
              heapBefore: before.heapUsed,
              heapAfter: after.heapUsed,
            }),
          );
          return;
        }
        case "/seed": {
          // Fast seeding with one INSERT … SELECT generate_series, never RPCs.
          const { from, to, policyId } = JSON.parse(body.toString()) as { from: number; to: number; policyId: string };
          const t0 = performance.now();
          await sql`insert into api_keys (name, policy_id, token_hash, start)
            select 'seed-' || i, ${policyId}::uuid, sha256(('seed-token-' || i)::bytea), 'ak_seed'
            from generate_series(${from}::int, ${to}::int) as i`.execute(db);
          await sql`analyze api_keys`.execute(db);
          res.end(JSON.stringify({ seconds: (performance.now() - t0) / 1000 }));
          return;
        }
        default:
          res.statusCode = 404;
      }
      res.end("{}");
    })().catch((err: unknown) => {
      res.statusCode = 500;
      res.end(JSON.stringify({ error: String(err) }));
    });
  });
});
// The driver's fetch keeps its connection across load runs longer than Node's 5 s default.
control.keepAliveTimeout = 600_000;
await new Promise<void>((r) => control.listen(0, "127.0.0.1", r));

const port = (s: http.Server | http2.Http2Server) => (s.address() as { port: number }).port;
process.stdout.write(
  `${JSON.stringify({ bench: "ready", port: server.port, empty: empty.port, generic: generic.port, raw2: port(raw2), raw1: port(raw1), grpcjs: grpcPort, control: port(control) })}\n`,
);
const stop = async () => {
  grpcServer.forceShutdown();
  raw1.close();
  raw2.close();
  control.close();
  await empty.close(0);
  await generic.close(0);
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
