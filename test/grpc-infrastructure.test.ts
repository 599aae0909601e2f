// Standard gRPC health (with a real grpc-js client) and server reflection (with
// `buf curl` and no local protos) on the real server.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./helpers/server.js";

const require = createRequire(import.meta.url);
const HEALTH_PROTO = join(dirname(require.resolve("grpc-health-check/package.json")), "proto/health/v1/health.proto");
const BUF = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));

interface HealthClient extends grpc.Client {
  check(req: { service: string }, callback: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
  watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
}

function healthClient(port: number): HealthClient {
  const definition = protoLoader.loadSync(HEALTH_PROTO, { enums: String });
  const proto = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: { health: { v1: { Health: new (address: string, credentials: grpc.ChannelCredentials) => HealthClient } } };
  };
  return new proto.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function check(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) => client.check({ service }, (err, res) => (err ? reject(err) : resolve(res!.status))));
}

function firstWatchStatus(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = client.watch({ service });
    stream.once("data", (res: { status: string }) => {
      resolve(res.status);
      stream.cancel();
    });
    stream.once("error", (err: grpc.ServiceError) => {
      if (err.code !== grpc.status.CANCELLED) reject(err);
    });
  });
}

async function bufCurl(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args], { timeout: 30_000 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

let t: TestServer;
let client: HealthClient;

beforeAll(async () => {
  t = await startTestServer();
  client = healthClient(t.server.port);
});

afterAll(async () => {
  client?.close();
  await t?.stop();
});

describe("grpc.health.v1.Health", () => {
  it("Check answers SERVING for the server and each served service, with no key", async () => {
    expect(await check(client, "")).toBe("SERVING");
    expect(await check(client, "apikeys.v1.ApiKeysService")).toBe("SERVING");
    expect(await check(client, "apikeys.v1.ApiKeysAdminService")).toBe("SERVING");
  });

  it("Check refuses an unknown service with NOT_FOUND", async () => {
    await expect(check(client, "no.such.Service")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it("Watch sends the current status first, SERVICE_UNKNOWN for unknown services", async () => {
    expect(await firstWatchStatus(client, "")).toBe("SERVING");
    expect(await firstWatchStatus(client, "no.such.Service")).toBe("SERVICE_UNKNOWN");
  });
});

describe("server reflection", () => {
  it("lets buf curl call an admin RPC with no local protos (v1)", async () => {
    const url = `${t.baseUrl}/apikeys.v1.ApiKeysAdminService/AdminGetApiKeyPolicies`;
    const res = await bufCurl([url, "-H", `authorization: Bearer ${t.adminToken}`]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout).policies.map((p: { name: string }) => p.name)).toContain("apikeys-admin");
  });

  it("serves v1alpha for older clients", async () => {
    const res = await bufCurl(["--reflect-protocol", "grpc-v1alpha", `${t.baseUrl}/apikeys.v1.ApiKeysService/TestApiKey`, "-H", `authorization: Bearer ${t.adminToken}`]);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout).apiKey.name).toBe("bootstrap");
  });

  it("lists the served services, health and reflection included", async () => {
    const res = await bufCurl(["--list-services", t.baseUrl]);
    expect(res.code).toBe(0);
    expect(res.stdout.trim().split("\n").sort()).toEqual(
      ["apikeys.v1.ApiKeysAdminService", "apikeys.v1.ApiKeysService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"].sort(),
    );
  });

  it("still enforces auth on the RPCs it describes", async () => {
    const res = await bufCurl([`${t.baseUrl}/apikeys.v1.ApiKeysAdminService/AdminGetApiKeyPolicies`]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/unauthenticated/);
  });

  it("reports symbols it does not know", async () => {
    const res = await bufCurl([`${t.baseUrl}/no.such.Service/Method`]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/no\.such\.Service/);
  });
});

describe("when the database is gone", () => {
  it("health turns NOT_SERVING and /readyz 503, while /healthz stays 200", async () => {
    const doomed = await startTestServer();
    const doomedClient = healthClient(doomed.server.port);
    try {
      expect(await check(doomedClient, "")).toBe("SERVING");
      await doomed.server.ctx.db.destroy();
      expect(await check(doomedClient, "")).toBe("NOT_SERVING");
      expect((await fetch(`${doomed.baseUrl}/readyz`)).status).toBe(503);
      expect((await fetch(`${doomed.baseUrl}/healthz`)).status).toBe(200);
    } finally {
      doomedClient.close();
      // Closing the already destroyed pool may throw; the test database must still go.
      await doomed.server.stop().catch(() => undefined);
      await doomed.database.drop();
    }
  });
});
