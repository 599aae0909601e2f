import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { generateToken } from "../src/tokens/token.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

/* The `apikeys` bin as a user runs it: a real process against a real server. */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin/apikeys.js");

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t.stop());

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", APIKEYS_URL: t.baseUrl, APIKEYS_ADMIN_TOKEN: t.adminToken, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once("exit", (code) => resolve({ code, stdout, stderr })));
}

const verify = (token: string) => clientsFor(t.baseUrl, "connect", t.adminToken).data.verifyToken({ token });

describe("policies, keys and permissions", () => {
  let firstToken: string;

  it("creates a policy, and says so with exit code 6 when it exists", async () => {
    const created = await cli(["policies", "create", "cli-reader", "--permissions", "apikeys:keys.read,apikeys:verify", "--description", "made by the CLI", "--json"]);
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ name: "cli-reader", description: "made by the CLI", permissions: ["apikeys:keys.read", "apikeys:verify"] });
    const again = await cli(["policies", "create", "cli-reader"]);
    expect(again.code).toBe(6);
    expect(again.stderr).toMatch(/already exists/);
  });

  it("lists policies as a table", async () => {
    const listed = await cli(["policies", "list"]);
    expect(listed.code).toBe(0);
    const [header, ...rows] = listed.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^ID\s+NAME\s+PERMISSIONS\s+DESCRIPTION$/);
    expect(rows.some((r) => /\scli-reader\s+apikeys:keys.read,apikeys:verify\s+made by the CLI$/.test(r))).toBe(true);
  });

  it("creates a key by policy name and prints its token once", async () => {
    const created = await cli(["keys", "create", "cli-job", "--policy", "cli-reader", "--expires", "2099-01-01T00:00:00Z"]);
    expect(created.code).toBe(0);
    firstToken = /token \(shown once, store it now\): (\S+)/.exec(created.stdout)![1]!;
    expect(created.stdout).toMatch(/cli-job\s+cli-reader\s+yes/);
    expect(created.stdout).toContain("2099-01-01T00:00:00.000Z");
    expect((await verify(firstToken)).valid).toBe(true);
  });

  it("lists keys, as JSON too, filtered by policy", async () => {
    const table = await cli(["keys", "list", "--policy", "cli-reader"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^ID\s+NAME\s+POLICY\s+ENABLED\s+START\s+EXPIRES\s+LAST USED\n/);
    expect(table.stdout).toContain("cli-job");
    expect(table.stdout).not.toContain("bootstrap");
    const json = await cli(["keys", "list", "--json"]);
    const keys = JSON.parse(json.stdout) as Array<{ name: string; start: string }>;
    expect(keys.map((k) => k.name).sort()).toEqual(["bootstrap", "cli-job"]);
    expect(json.stdout).not.toContain(firstToken);
  });

  it("rotates a key: the new token works, the old one stops", async () => {
    const rotated = await cli(["keys", "rotate", "cli-job", "--json"]);
    expect(rotated.code).toBe(0);
    const { token, apiKey } = JSON.parse(rotated.stdout) as { token: string; apiKey: { name: string } };
    expect(apiKey.name).toBe("cli-job");
    expect((await verify(token)).valid).toBe(true);
    expect((await verify(firstToken)).code).toBe(VerifyCode.NOT_FOUND);
    firstToken = token;
  });

  it("shows a key's verification outcomes per day, with totals", async () => {
    const { admin, data } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const policy = (await admin.adminCreateApiKeyPolicy({ name: "cli-usage" })).policy!;
    const created = await admin.adminCreateApiKey({ name: "cli-usage-key", policyId: policy.id });
    for (let i = 0; i < 3; i++) await data.verifyToken({ token: created.token });
    await data.verifyToken({ token: created.token, allOf: ["apikeys:keys.read"] });
    await t.server.ctx.verifier.usage.flush();
    const shown = await cli(["keys", "usage", "cli-usage-key"]);
    expect(shown.code).toBe(0);
    const lines = shown.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^START\s+VALID\s+INSUFFICIENT_PERMISSIONS$/);
    expect(lines.at(-1)).toMatch(/^TOTAL\s+3\s+1$/);
    const asJson = await cli(["keys", "usage", created.apiKey!.id, "--hourly", "--days", "2", "--json"]);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ totals: { VERIFY_CODE_VALID: "3", VERIFY_CODE_INSUFFICIENT_PERMISSIONS: "1" } });
    const bad = await cli(["keys", "usage", "cli-usage-key", "--hourly", "--days", "40"]);
    expect(bad.code).toBe(2);
  });

  it("disables a key", async () => {
    const disabled = await cli(["keys", "disable", "cli-job"]);
    expect(disabled.code).toBe(0);
    expect(disabled.stdout).toMatch(/cli-job\s+cli-reader\s+no/);
    expect((await verify(firstToken)).code).toBe(VerifyCode.DISABLED);
  });

  it("lists permissions grouped by service", async () => {
    const listed = await cli(["permissions", "list", "--json"]);
    expect(listed.code).toBe(0);
    const names = (JSON.parse(listed.stdout) as Array<{ name: string }>).map((p) => p.name);
    expect(names).toContain("apikeys:keys.read");
    expect((await cli(["permissions", "list"])).stdout).toMatch(/^PERMISSION\s+DEPRECATED\s+DESCRIPTION\n/);
  });

  it("deletes a key, then answers exit code 5 for it", async () => {
    expect((await cli(["keys", "delete", "cli-job"])).code).toBe(0);
    expect((await verify(firstToken)).code).toBe(VerifyCode.NOT_FOUND);
    const again = await cli(["keys", "delete", "cli-job"]);
    expect(again.code).toBe(5);
    expect(again.stderr).toMatch(/no API key named "cli-job"/);
  });

  it("deletes a policy with its keys", async () => {
    await cli(["keys", "create", "cli-doomed", "--policy", "cli-reader"]);
    const deleted = await cli(["policies", "delete", "cli-reader"]);
    expect(deleted.code).toBe(0);
    expect(deleted.stdout).toBe("deleted policy cli-reader and 1 key(s)\n");
  });
});

describe("exit codes", () => {
  it("2 for usage errors, with the usage on stderr", async () => {
    for (const args of [[], ["keys"], ["keys", "create", "x"], ["policies", "frobnicate"], ["keys", "list", "--bogus"], ["keys", "rotate", "x", "--grace", "soon"]]) {
      const run = await cli(args);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain("usage: apikeys");
    }
    expect((await cli(["keys", "list"], { APIKEYS_ADMIN_TOKEN: "" })).code).toBe(2);
    const help = await cli(["--help"]);
    expect([help.code, help.stdout.startsWith("usage: apikeys")]).toEqual([0, true]);
  });

  it("3 for a refused key, 4 for an unreachable service, 1 for a refused request", async () => {
    const refused = await cli(["keys", "list"], { APIKEYS_ADMIN_TOKEN: generateToken("ak") });
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/invalid API key/);
    expect((await cli(["keys", "list"], { APIKEYS_URL: "http://127.0.0.1:1" })).code).toBe(4);
    const invalid = await cli(["policies", "create", "bad", "--permissions", "nosuch:perm"]);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toMatch(/nosuch:perm/);
  });

  it("never prints the admin token", async () => {
    const run = await cli(["keys", "list", "--json"]);
    expect(run.stdout + run.stderr).not.toContain(t.adminToken);
  });
});

describe("serve and migrate", () => {
  it("migrates a database and serves it until SIGTERM", async () => {
    const dir = mkdtempSync(join(tmpdir(), "apikeys-cli-"));
    try {
      const env = { APIKEYS_DATA_DIR: dir, PORT: "0", HOST: "127.0.0.1", HOME: process.env.HOME ?? "" };
      const migrated = await cli(["migrate"], env);
      expect(migrated.code).toBe(0);
      expect(migrated.stdout).toMatch(/^applied: /);
      const child = spawn(process.execPath, [BIN, "serve"], { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
      for (let i = 0; i < 600 && !out.includes('"apikeys listening"'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(out).toContain('"apikeys listening"');
      const { port } = JSON.parse(out.split("\n").find((l) => l.includes('"apikeys listening"'))!) as { port: number };
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).toBe(200);
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
