import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { generateToken } from "../src/tokens/token.js";
import { createTestDatabase, type TestDatabase, usingPostgres } from "./helpers/database.js";
import { codeOf } from "./helpers/errors.js";
import { runServerToExit, type ServerProcess, spawnServer } from "./helpers/process.js";
import { clientsFor } from "./helpers/server.js";

const run = promisify(execFile);
const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Database env for a spawned server: its own Postgres database, or a PGlite directory. */
async function databaseEnv(): Promise<Record<string, string>> {
  const db: TestDatabase = await createTestDatabase();
  cleanups.push(() => db.drop());
  if (db.url) return { DATABASE_URL: db.url };
  const dir = mkdtempSync(join(tmpdir(), "apikeys-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return { APIKEYS_DATA_DIR: dir };
}

async function spawn(env: Record<string, string>): Promise<ServerProcess> {
  const server = await spawnServer(env);
  cleanups.push(() => void server.stop("SIGKILL"));
  return server;
}

describe("bootstrap", () => {
  it("prints a generated token once, on the first start only, and it is an admin key", async () => {
    const env = await databaseEnv();
    const first = await spawn(env);
    const line = first.output().split("\n").find((l) => l.includes("bootstrap") && /ak_[0-9A-Za-z]{38}/.test(l));
    expect(line).toBeDefined();
    const token = /ak_[0-9A-Za-z]{38}/.exec(line!)![0];
    const { admin } = clientsFor(`http://127.0.0.1:${first.port}`, "connect", token);
    const policies = await admin.adminGetApiKeyPolicies({});
    expect(policies.policies.map((p) => p.name)).toEqual(["apikeys-admin"]);
    expect(policies.policies[0]!.permissions).toContain("apikeys:verify");
    expect(await first.stop()).toBe(0);

    const second = await spawn(env);
    expect(second.output()).not.toMatch(/ak_[0-9A-Za-z]{38}/);
    const keys = await clientsFor(`http://127.0.0.1:${second.port}`, "connect", token).admin.adminGetApiKeys({});
    expect(keys.apiKeys.map((k) => k.name)).toEqual(["bootstrap"]);
    await second.stop();
  });

  it("takes the token from APIKEYS_BOOTSTRAP_TOKEN without printing it", async () => {
    const token = generateToken("ak");
    const server = await spawn({ ...(await databaseEnv()), APIKEYS_BOOTSTRAP_TOKEN: token });
    expect(server.output()).not.toContain(token);
    expect(server.output()).toContain("APIKEYS_BOOTSTRAP_TOKEN");
    const res = await clientsFor(`http://127.0.0.1:${server.port}`, "grpc", token).data.testApiKey({});
    expect(res.apiKey?.name).toBe("bootstrap");
    await server.stop();
  });
});

describe("process", () => {
  it("exits non-zero with one clear line on a configuration error", async () => {
    const { code, output } = await runServerToExit({ PORT: "not-a-port" });
    expect(code).toBe(2);
    expect(output.trim().split("\n")).toEqual(['apikeys: configuration error: PORT must be a whole number, got "not-a-port"']);
  });

  it("finishes in-flight work and exits 0 on SIGTERM", async () => {
    const token = generateToken("ak");
    const server = await spawn({ ...(await databaseEnv()), APIKEYS_BOOTSTRAP_TOKEN: token });
    const { admin } = clientsFor(`http://127.0.0.1:${server.port}`, "connect", token);
    const inFlight = Array.from({ length: 20 }, () => admin.adminGetApiKeyPolicies({}));
    server.child.kill("SIGTERM");
    const results = await Promise.allSettled(inFlight);
    expect(await server.exited).toBe(0);
    // Requests that reached the server before SIGTERM completed; none failed half-way with internal.
    for (const r of results) if (r.status === "rejected") expect(String(r.reason)).not.toMatch(/internal/);
    expect(server.output()).toContain("shutting down");
  });

  it("serves the admin service only on ADMIN_PORT when set", async () => {
    const token = generateToken("ak");
    const server = await spawn({ ...(await databaseEnv()), APIKEYS_BOOTSTRAP_TOKEN: token, ADMIN_PORT: "0" });
    expect(server.adminPort).toBeGreaterThan(0);
    const dataUrl = `http://127.0.0.1:${server.port}`;
    const adminUrl = `http://127.0.0.1:${server.adminPort}`;
    expect((await clientsFor(adminUrl, "grpc", token).admin.adminGetApiKeyPolicies({})).policies).toHaveLength(1);
    expect(await codeOf(clientsFor(dataUrl, "grpc", token).admin.adminGetApiKeyPolicies({}))).toBe(Code.Unimplemented);
    expect((await clientsFor(dataUrl, "connect", token).data.testApiKey({})).apiKey?.name).toBe("bootstrap");
    expect(await codeOf(clientsFor(adminUrl, "connect", token).data.testApiKey({}))).toBe(Code.Unimplemented);
    await server.stop();
  });

  it("answers buf curl on every protocol, over HTTP/1.1 and cleartext HTTP/2", async () => {
    const token = generateToken("ak");
    const server = await spawn({ ...(await databaseEnv()), APIKEYS_BOOTSTRAP_TOKEN: token });
    const url = `http://127.0.0.1:${server.port}/apikeys.v1.ApiKeysService/VerifyToken`;
    const body = JSON.stringify({ token, all_of: ["apikeys:verify"] });
    for (const args of [
      ["--protocol", "grpc", "--http2-prior-knowledge"],
      ["--protocol", "grpcweb", "--http2-prior-knowledge"],
      ["--protocol", "connect", "--http2-prior-knowledge"],
      ["--protocol", "connect"],
      ["--protocol", "grpcweb"],
    ]) {
      const { stdout } = await run("npx", ["buf", "curl", ...args, "--schema", "proto", "-H", `x-api-key: ${token}`, "-d", body, url]);
      const res = JSON.parse(stdout) as { valid: boolean; code: string; apiKey: { name: string } };
      expect(res, args.join(" ")).toMatchObject({ valid: true, code: "VERIFY_CODE_VALID", apiKey: { name: "bootstrap" } });
    }
    await server.stop();
  });
});

describe.skipIf(!usingPostgres)("two instances on one Postgres", () => {
  it("a change through one is seen by the other's next verification", async () => {
    const token = generateToken("ak");
    const env = { ...(await databaseEnv()), APIKEYS_BOOTSTRAP_TOKEN: token };
    const a = await spawn(env);
    const b = await spawn(env);
    const onA = clientsFor(`http://127.0.0.1:${a.port}`, "grpc", token);
    const onB = clientsFor(`http://127.0.0.1:${b.port}`, "grpc", token);
    await onA.data.registerPermissions({ service: "ledger", permissions: [{ name: "read", description: "" }, { name: "post", description: "" }] });
    const { policy } = await onA.admin.adminCreateApiKeyPolicy({ name: "ledger", permissions: ["ledger:read"] });
    const { apiKey, token: key } = await onA.admin.adminCreateApiKey({ name: "ledger-client", policyId: policy!.id });

    // Warm B's cache, then change the policy through A: B must not answer from a stale cache.
    for (let i = 0; i < 3; i++) expect((await onB.data.verifyToken({ token: key, allOf: ["ledger:post"] })).valid).toBe(false);
    for (let round = 0; round < 20; round++) {
      const grant = round % 2 === 0;
      await onA.admin.adminUpdateApiKeyPolicy({
        id: policy!.id,
        permissions: grant ? ["ledger:read", "ledger:post"] : ["ledger:read"],
        updateMask: { paths: ["permissions"] },
      });
      const verdict = await waitForNotify(() => onB.data.verifyToken({ token: key, allOf: ["ledger:post"] }), (r) => r.valid === grant);
      expect(verdict.valid, `round ${round}`).toBe(grant);
    }

    await onA.admin.adminUpdateApiKey({ id: apiKey!.id, enabled: false });
    expect((await waitForNotify(() => onB.data.verifyToken({ token: key }), (r) => !r.valid)).code).toBe(VerifyCode.DISABLED);
    await onA.admin.adminDeleteApiKey({ id: apiKey!.id });
    const deleted = await waitForNotify(() => onB.data.verifyToken({ token: key }), (r) => r.code === VerifyCode.NOT_FOUND);
    expect(deleted.code).toBe(VerifyCode.NOT_FOUND);
    await Promise.all([a.stop(), b.stop()]);
  });
});

/**
 * NOTIFY is delivered after commit, asynchronously: poll for it within a bound
 * of 2 s (it takes about a millisecond; the bound absorbs a loaded CI machine),
 * far below the cache's 5-minute safety TTL that a missed event would fall back on.
 */
async function waitForNotify<T>(verify: () => Promise<T>, done: (result: T) => boolean): Promise<T> {
  const deadline = Date.now() + 2_000;
  let result = await verify();
  while (!done(result) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
    result = await verify();
  }
  return result;
}
