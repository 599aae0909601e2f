import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { type Config, readConfig } from "../../src/config.js";
import { ApiKeysAdminService } from "../../src/gen/apikeys/v1/admin_pb.js";
import { ApiKeysService } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { createLogger } from "../../src/logger.js";
import { type Server, type ServerHooks, startServer } from "../../src/server.js";
import { generateToken } from "../../src/tokens/token.js";
import { createTestDatabase, type TestDatabase } from "./database.js";

/** A real server on a free port with its own database and a known admin token. */
export interface TestServer {
  server: Server;
  baseUrl: string;
  adminBaseUrl: string;
  adminToken: string;
  database: TestDatabase;
  stop(): Promise<void>;
}

/** Starts the service in-process on port 0 against an isolated database. */
export async function startTestServer(env: Record<string, string> = {}, hooks: ServerHooks = {}): Promise<TestServer> {
  const database = await createTestDatabase();
  const adminToken = generateToken("ak");
  const config: Config = readConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    APIKEYS_DATA_DIR: "memory://",
    ...(database.url !== undefined && { DATABASE_URL: database.url }),
    APIKEYS_BOOTSTRAP_TOKEN: adminToken,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    DATABASE_POOL_SIZE: "5",
    ...env,
  });
  const server = await startServer(config, createLogger(config.logLevel), hooks);
  const baseUrl = `http://127.0.0.1:${server.port}`;
  return {
    server,
    baseUrl,
    adminBaseUrl: server.adminPort === undefined ? baseUrl : `http://127.0.0.1:${server.adminPort}`,
    adminToken,
    database,
    async stop() {
      await server.stop();
      await database.drop();
    },
  };
}

/**
 * Another instance on the first one's Postgres database, as a fleet runs
 * (PGlite has one process per database: callers skip there). Stopping it
 * leaves the database to the first.
 */
export async function startPeerServer(first: TestServer, env: Record<string, string> = {}, hooks: ServerHooks = {}): Promise<{ server: Server; baseUrl: string; stop(): Promise<void> }> {
  if (first.database.url === undefined) throw new Error("a peer instance needs Postgres (DATABASE_URL)");
  const config: Config = readConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    DATABASE_URL: first.database.url,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    DATABASE_POOL_SIZE: "5",
    ...env,
  });
  const server = await startServer(config, createLogger(config.logLevel), hooks);
  return { server, baseUrl: `http://127.0.0.1:${server.port}`, stop: () => server.stop() };
}

/** The wire protocols every RPC test runs over. */
export const PROTOCOLS = ["connect", "grpc", "grpc-web"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** Sends `token` as a Bearer token unless the call sets its own auth header. */
function bearer(token: string | undefined): Interceptor[] {
  if (token === undefined) return [];
  return [
    (next) => (req) => {
      if (!req.header.has("authorization") && !req.header.has("x-api-key")) req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    },
  ];
}

/** A transport of the given protocol (HTTP/2 for gRPC, HTTP/1.1 for Connect, HTTP/2 for gRPC-Web unless asked). */
export function transportFor(baseUrl: string, protocol: Protocol, token?: string, httpVersion?: "1.1" | "2"): Transport {
  // One transport (so one HTTP/2 session) per combination, as a real client keeps: a new
  // session per call would pile up idle connections until the per-address cap refuses them.
  const cacheKey = JSON.stringify([baseUrl, protocol, token ?? null, httpVersion ?? null]);
  let transport = transports.get(cacheKey);
  if (transport === undefined) {
    transport = createTransport(baseUrl, protocol, token, httpVersion);
    transports.set(cacheKey, transport);
  }
  return transport;
}

const transports = new Map<string, Transport>();

function createTransport(baseUrl: string, protocol: Protocol, token: string | undefined, httpVersion: "1.1" | "2" | undefined): Transport {
  const interceptors = bearer(token);
  switch (protocol) {
    case "connect":
      return createConnectTransport({ baseUrl, httpVersion: httpVersion ?? "1.1", interceptors });
    case "grpc":
      return createGrpcTransport({ baseUrl, interceptors });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: httpVersion ?? "2", interceptors });
  }
}

/** Typed clients for both services over one protocol, sending `token` on every call. */
export function clientsFor(
  baseUrl: string,
  protocol: Protocol,
  token?: string,
  adminBaseUrl = baseUrl,
): { data: Client<typeof ApiKeysService>; admin: Client<typeof ApiKeysAdminService> } {
  return {
    data: createClient(ApiKeysService, transportFor(baseUrl, protocol, token)),
    admin: createClient(ApiKeysAdminService, transportFor(adminBaseUrl, protocol, token)),
  };
}
