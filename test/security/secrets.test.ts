import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import { generateToken } from "../../src/tokens/token.js";
import { createTestDatabase, type TestDatabase, usingPostgres } from "../helpers/database.js";
import { codeOf } from "../helpers/errors.js";
import { type ServerProcess, spawnServer } from "../helpers/process.js";
import { clientsFor } from "../helpers/server.js";

/*
 * Issues, uses, rotates and reports tokens against a real server process, then
 * looks for every token in everything the service wrote: its logs (at debug
 * level), and the whole database (pg_dump on Postgres; every file of the data
 * directory, WAL included, on PGlite).
 */

const run = promisify(execFile);
let database: TestDatabase;
let dataDir: string;
let server: ServerProcess;
const adminToken = generateToken("ak");
const tokens: string[] = [adminToken];
const names: string[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  dataDir = mkdtempSync(join(tmpdir(), "apikeys-secrets-"));
  server = await spawnServer({
    APIKEYS_BOOTSTRAP_TOKEN: adminToken,
    LOG_LEVEL: "debug",
    ...(database.url !== undefined ? { DATABASE_URL: database.url } : { APIKEYS_DATA_DIR: dataDir }),
  }, 90_000);
  const baseUrl = `http://127.0.0.1:${server.port}`;
  const { admin, data } = clientsFor(baseUrl, "connect", adminToken);
  const grpc = clientsFor(baseUrl, "grpc", adminToken);

  const policy = await admin.adminCreateApiKeyPolicy({ name: "secrets-policy", permissions: ["apikeys:keys.read", "apikeys:verify"] });
  for (let i = 0; i < 3; i++) {
    const name = `secrets-key-${i}`;
    names.push(name);
    const created = await admin.adminCreateApiKey({ name, policyId: policy.policy!.id });
    tokens.push(created.token);
  }
  const [first, second, third] = tokens.slice(1) as [string, string, string];
  // Use every way a token reaches the service: both headers, every protocol, REST, request bodies.
  await clientsFor(baseUrl, "grpc-web").admin.adminGetApiKeys({}, { headers: { "x-api-key": first } });
  await clientsFor(baseUrl, "grpc", second).admin.adminGetApiKeys({});
  await fetch(`${baseUrl}/api/v1/api_keys`, { headers: { authorization: `Bearer ${third}` } }).then((r) => r.arrayBuffer());
  await fetch(`${baseUrl}/api/v1/api_keys`, { headers: { "x-api-key": first } }).then((r) => r.arrayBuffer());
  await data.verifyToken({ token: first, allOf: ["apikeys:keys.read"] });
  await grpc.data.verifyToken({ token: second, allOf: ["apikeys:policies.write"] });
  const keys = await admin.adminGetApiKeys({});
  const firstKey = keys.apiKeys.find((k) => k.name === names[0])!;
  const rotated = await grpc.admin.adminRotateApiKey({ id: firstKey.id, gracePeriod: { seconds: 60n, nanos: 0 } });
  tokens.push(rotated.token);
  await data.verifyToken({ token: rotated.token });
  await data.reportLeakedToken({ token: third, sourceUrl: "https://example.com/paste" });
  // Refused attempts log too: an unknown well-formed token and a deleted one.
  const unknown = generateToken("ak");
  tokens.push(unknown);
  expect(await codeOf(clientsFor(baseUrl, "connect", unknown).admin.adminGetApiKeys({}))).not.toBe("ok");
  await admin.adminDeleteApiKey({ id: keys.apiKeys.find((k) => k.name === names[1])!.id });
  expect(await codeOf(clientsFor(baseUrl, "connect", second).admin.adminGetApiKeys({}))).not.toBe("ok");

  // Batched last-used times and shutdown flushes write what they write; then look.
  expect(await server.stop()).toBe(0);
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await database?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** The token and its secret part without the prefix, each of which must never be stored or logged. */
function needles(token: string): string[] {
  return [token, token.slice(token.indexOf("_") + 1)];
}

it("logs one line per RPC and never a token, even at debug level", () => {
  const output = server.output();
  const rpcLines = output.split("\n").filter((l) => l.includes('"msg":"rpc"'));
  expect(rpcLines.length).toBeGreaterThanOrEqual(15);
  for (const token of tokens) for (const needle of needles(token)) expect(output).not.toContain(needle);
});

it.runIf(usingPostgres)("stores no token anywhere in a full pg_dump", async () => {
  const { stdout } = await run("pg_dump", ["--no-owner", "--inserts", database.url!], { maxBuffer: 64 * 1024 * 1024 });
  for (const name of names) expect(stdout).toContain(name);
  for (const token of tokens) for (const needle of needles(token)) expect(stdout).not.toContain(needle);
});

it.runIf(!usingPostgres)("stores no token anywhere in the embedded database's files, WAL included", () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else files.push(path);
    }
  };
  walk(dataDir);
  const contents = files.map((f) => readFileSync(f));
  expect(contents.some((c) => c.includes(names[0]!))).toBe(true);
  for (const token of tokens) {
    for (const needle of needles(token)) expect(contents.some((c) => c.includes(needle))).toBe(false);
  }
});

it("redacts authorization and x-api-key wherever a header object is logged", async () => {
  const token = generateToken("ak");
  const script = `
    import { createLogger } from "./src/logger.ts";
    const log = createLogger("info");
    log.info({ authorization: "Bearer ${token}", headers: { authorization: "Bearer ${token}", "x-api-key": "${token}" } }, "headers");
    log.info({ req: { headers: { authorization: "Bearer ${token}", "x-api-key": "${token}" } } }, "request");
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: process.cwd() });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  await new Promise((resolve) => child.once("exit", resolve));
  const lines = out.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(lines).toHaveLength(2);
  expect(out).not.toContain(token);
  expect(lines[0]).toMatchObject({ authorization: "[redacted]", headers: { authorization: "[redacted]", "x-api-key": "[redacted]" } });
  expect(lines[1]).toMatchObject({ req: { headers: { authorization: "[redacted]", "x-api-key": "[redacted]" } } });
});
