// Another team's services, protected by @apikeys/client as its README says: one Connect,
// one Express, one Fastify and one grpc-js server, each answering no key / a key lacking
// the permission / a key holding it, then refusing that key within 1 s of its disable.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import {
  KeyVerifier,
  apiKeyAuth,
  clientAddressContext,
  createApiKeysClients,
  registerPermissions,
  verifiedKey,
} from "@apikeys/client";
import { type ApiKeyRequest, apiKeyMiddleware } from "@apikeys/client/express";
import { apiKeyPlugin, apiKeyPreHandler } from "@apikeys/client/fastify";
import { apiKeyInterceptor, verifiedKeyOf } from "@apikeys/client/grpc-js";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import express from "express";
import Fastify from "fastify";
import { ShopService } from "./gen/shop/v1/shop_pb.js";

const apikeysUrl = required("APIKEYS_URL");
const adminToken = required("APIKEYS_ADMIN_TOKEN");
const here = fileURLToPath(new URL("..", import.meta.url));
const packageProto = `${here}node_modules/@apikeys/client/proto`;

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`set ${name}`);
  return value;
}

function ok(what: string): void {
  console.log(`ok - ${what}`);
}

function expectEqual(actual: unknown, expected: unknown, what: string): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

// --- keys: one for the services themselves, one holding the permissions, one lacking them
const { admin } = createApiKeysClients({ baseUrl: apikeysUrl, token: adminToken });
const suffix = Date.now().toString(36);
async function keyWith(name: string, permissions: string[]): Promise<{ id: string; token: string }> {
  const { policy } = await admin.adminCreateApiKeyPolicy({ name: `${name}-${suffix}`, description: "", permissions });
  const created = await admin.adminCreateApiKey({ name: `${name}-${suffix}`, policyId: policy?.id ?? "" });
  return { id: created.apiKey?.id ?? "", token: created.token };
}
const service = await keyWith("shop-service", ["apikeys:verify", "apikeys:permissions.register"]);
const clients = createApiKeysClients({ baseUrl: apikeysUrl, token: service.token });
// Proto-declared (ShopService's options) and plain declarations, as an HTTP service has no proto.
const registered = await registerPermissions(
  [ShopService, { service: "reports", permissions: [{ name: "read", description: "Read reports." }] }],
  clients.apiKeys,
);
expectEqual(registered.map((p) => p.name).sort(), ["reports:read", "shop:items.read", "shop:items.write"], "registered permissions");
ok("registerPermissions takes service descriptors and plain declarations");
const holder = await keyWith("holder", ["shop:items.read", "reports:read"]);
const lacking = await keyWith("lacking", ["shop:items.write"]);

/** Each server gets its own verifier (own cache, own invalidation stream), as separate services would. */
async function liveVerifier(): Promise<KeyVerifier> {
  const verifier = new KeyVerifier({ client: clients.apiKeys });
  const deadline = Date.now() + 10_000;
  while (!verifier.connected) {
    if (Date.now() > deadline) throw new Error("invalidation stream did not connect");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return verifier;
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

// --- Connect, from our own proto generated with buf generate
const connectAuth = apiKeyAuth({ verifier: await liveVerifier() });
const connectServer = createServer(
  connectNodeAdapter({
    routes: (router) =>
      router.service(ShopService, {
        getItem: (req, ctx) => ({ sku: req.sku, caller: ctx.values.get(verifiedKey)?.name ?? "" }),
        ping: () => ({}),
      }),
    interceptors: [connectAuth],
    contextValues: clientAddressContext,
  }),
);
const connectUrl = await listen(connectServer);
const shop = createClient(ShopService, createConnectTransport({ baseUrl: connectUrl, httpVersion: "1.1" }));
async function connectCall(token: string | undefined): Promise<string> {
  try {
    const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
    const res = await shop.getItem({ sku: "bolt" }, { headers });
    return `OK ${res.caller}`;
  } catch (err) {
    return Code[ConnectError.from(err).code] ?? "?";
  }
}

// --- Express
const expressVerifier = await liveVerifier();
const expressApp = express();
expressApp.get("/reports", apiKeyMiddleware({ verifier: expressVerifier, allOf: ["reports:read"] }), (req, res) => {
  res.json({ caller: (req as ApiKeyRequest).apiKey?.name });
});
const expressServer = createServer(expressApp);
const expressUrl = await listen(expressServer);
// The same middleware on plain node:http.
const guard = apiKeyMiddleware({ verifier: expressVerifier, allOf: ["reports:read"] });
const plainServer = createServer((req, res) =>
  guard(req, res, () => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ caller: (req as ApiKeyRequest).apiKey?.name }))),
);
const plainUrl = await listen(plainServer);

// --- Fastify
const fastifyVerifier = await liveVerifier();
const fastify = Fastify();
fastify.get("/reports", { preHandler: apiKeyPreHandler({ verifier: fastifyVerifier, allOf: ["reports:read"] }) }, async (request) => ({
  caller: request.apiKey?.name,
}));
// The plugin covers every route of the scope it is registered in.
await fastify.register(async (scope) => {
  await scope.register(apiKeyPlugin, { verifier: fastifyVerifier, anyOf: ["reports:read", "reports:admin"] });
  scope.get("/scoped/reports", async (request) => ({ caller: request.apiKey?.name }));
});
const fastifyUrl = await fastify.listen({ port: 0, host: "127.0.0.1" });

// --- grpc-js, with the service definition from @grpc/proto-loader and requirements from the descriptors
const definition = protoLoader.loadSync("shop/v1/shop.proto", { includeDirs: [`${here}proto`, packageProto] });
const shopDefinition = (grpc.loadPackageDefinition(definition) as unknown as { shop: { v1: { ShopService: grpc.ServiceClientConstructor } } }).shop.v1
  .ShopService;
const grpcVerifier = await liveVerifier();
const grpcServer = new grpc.Server({ interceptors: [apiKeyInterceptor({ verifier: grpcVerifier, services: [ShopService] })] });
grpcServer.addService(shopDefinition.service, {
  getItem: (call: grpc.ServerUnaryCall<{ sku: string }, unknown>, callback: grpc.sendUnaryData<unknown>) =>
    callback(null, { sku: call.request.sku, caller: verifiedKeyOf(call.metadata)?.name ?? "" }),
  ping: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => callback(null, {}),
});
const grpcPort = await new Promise<number>((resolve, reject) =>
  grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
);
const grpcClient = new shopDefinition(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
function grpcCall(token: string | undefined): Promise<string> {
  const metadata = new grpc.Metadata();
  if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
  return new Promise((resolve) => {
    const getItem = grpcClient["getItem"] as (req: object, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: { caller: string }) => void) => void;
    getItem.call(grpcClient, { sku: "bolt" }, metadata, (err, res) => resolve(err ? (grpc.status[err.code] ?? "?") : `OK ${res?.caller ?? ""}`));
  });
}

async function httpCall(url: string, token: string | undefined): Promise<string> {
  const res = await fetch(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  const body = (await res.json()) as { code?: number; message?: string; caller?: string };
  if (res.status === 401 && !(res.headers.get("www-authenticate") ?? "").startsWith("Bearer")) throw new Error(`${url}: 401 without WWW-Authenticate: Bearer`);
  if (res.status !== 200 && (typeof body.code !== "number" || typeof body.message !== "string")) {
    throw new Error(`${url}: ${res.status} body is not a google.rpc.Status: ${JSON.stringify(body)}`);
  }
  if (res.status === 403 && !(body.message ?? "").includes("reports:read")) throw new Error(`${url}: 403 does not name the missing permission`);
  return res.status === 200 ? `200 ${body.caller ?? ""}` : String(res.status);
}

const holderName = `holder-${suffix}`;
const servers: Array<{ name: string; call: (token: string | undefined) => Promise<string>; refused: [string, string, string]; refusedDisabled: string }> = [
  { name: "Connect", call: connectCall, refused: ["Unauthenticated", "PermissionDenied", `OK ${holderName}`], refusedDisabled: "Unauthenticated" },
  { name: "Express", call: (t) => httpCall(`${expressUrl}/reports`, t), refused: ["401", "403", `200 ${holderName}`], refusedDisabled: "401" },
  { name: "node:http", call: (t) => httpCall(`${plainUrl}/reports`, t), refused: ["401", "403", `200 ${holderName}`], refusedDisabled: "401" },
  { name: "Fastify", call: (t) => httpCall(`${fastifyUrl}/reports`, t), refused: ["401", "403", `200 ${holderName}`], refusedDisabled: "401" },
  { name: "Fastify plugin", call: (t) => httpCall(`${fastifyUrl}/scoped/reports`, t), refused: ["401", "403", `200 ${holderName}`], refusedDisabled: "401" },
  { name: "grpc-js", call: grpcCall, refused: ["UNAUTHENTICATED", "PERMISSION_DENIED", `OK ${holderName}`], refusedDisabled: "UNAUTHENTICATED" },
];
await shop.ping({});
ok("Connect: a public method answers without a key");
for (const server of servers) {
  const answers = [await server.call(undefined), await server.call(lacking.token), await server.call(holder.token)];
  expectEqual(answers, server.refused, `${server.name} (no key, lacking key, holding key)`);
  ok(`${server.name}: ${answers.join(" / ")}`);
}

// --- disable the holder's key: every server must refuse it within 1 s, from its own cache's eviction
const disabledAt = Date.now();
await admin.adminUpdateApiKey({ id: holder.id, enabled: false });
await Promise.all(
  servers.map(async (server) => {
    for (;;) {
      const answer = await server.call(holder.token);
      const elapsed = Date.now() - disabledAt;
      if (answer === server.refusedDisabled) return ok(`${server.name}: disabled key refused after ${elapsed} ms`);
      if (elapsed > 1_000) throw new Error(`${server.name}: disabled key still answered ${answer} after ${elapsed} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }),
);

// --- @grpc/proto-loader parses the whole shipped contract (repeated options included)
const contract = protoLoader.loadSync(["apikeys/v1/api_keys.proto", "apikeys/v1/admin.proto"], { includeDirs: [packageProto] });
for (const name of ["apikeys.v1.ApiKeysService", "apikeys.v1.ApiKeysAdminService"]) {
  if (contract[name] === undefined) throw new Error(`proto-loader: ${name} missing`);
}
ok("@grpc/proto-loader loads the shipped apikeys/v1 protos");

grpcClient.close();
await new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
await fastify.close();
for (const server of [connectServer, expressServer, plainServer]) {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}
// An open verifier keeps the process alive (its invalidation stream): close each one.
await Promise.all([connectAuth.verifier.close(), expressVerifier.close(), fastifyVerifier.close(), grpcVerifier.close()]);
