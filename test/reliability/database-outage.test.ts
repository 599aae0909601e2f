import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { generateToken } from "../../src/tokens/token.js";
import { usingPostgres } from "../helpers/database.js";
import { codeOf } from "../helpers/errors.js";
import { type ServerProcess, spawnServer } from "../helpers/process.js";
import { clientsFor } from "../helpers/server.js";

/*
 * A throwaway Postgres cluster of this test's own (never the shared one) on its
 * own port, stopped under load and started again, with a real server process.
 * Runs in the Postgres pass of the suite; needs the Postgres server binaries
 * and a "postgres" OS user to run them as.
 */

const run = promisify(execFile);
const BIN = "/usr/lib/postgresql/15/bin";
const STALENESS_SECONDS = 3;
/** How long Postgres stays down (OUTAGE_SECONDS, default 10). */
const OUTAGE_MS = Number(process.env.OUTAGE_SECONDS ?? 10) * 1000;
const canRun = usingPostgres && existsSync(`${BIN}/initdb`) && process.getuid?.() === 0;
if (usingPostgres && !canRun) {
  console.warn(`database-outage: skipped: needs ${BIN}/initdb and root to run it as the postgres user`);
}

let dir: string;
let port: number;
let server: ServerProcess;
const adminToken = generateToken("ak");

const asPostgres = (cmd: string, args: string[]) => run("runuser", ["-u", "postgres", "--", cmd, ...args], { timeout: 60_000 });
const pgCtl = (...args: string[]) => asPostgres(`${BIN}/pg_ctl`, ["-D", join(dir, "data"), "-w", "-t", "30", ...args]);

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port: p } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return p;
}

async function startCluster() {
  await pgCtl("-l", join(dir, "log"), "-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`, "start");
}

beforeAll(async () => {
  if (!canRun) return;
  dir = mkdtempSync(join(tmpdir(), "apikeys-outage-"));
  await run("chown", ["postgres:postgres", dir]);
  port = await freePort();
  await asPostgres(`${BIN}/initdb`, ["-D", join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync"]);
  await startCluster();
  server = await spawnServer(
    {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/postgres`,
      APIKEYS_BOOTSTRAP_TOKEN: adminToken,
      APIKEYS_OUTAGE_STALENESS_SECONDS: String(STALENESS_SECONDS),
      LOG_LEVEL: "info",
    },
    90_000,
  );
}, 180_000);

afterAll(async () => {
  await server?.stop();
  if (dir !== undefined) {
    await pgCtl("-m", "immediate", "stop").catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});

it.runIf(canRun)(
  "serves cached verifications for a bounded staleness, then fails closed; refuses writes cleanly; recovers without restart",
  async () => {
    const baseUrl = `http://127.0.0.1:${server.port}`;
    const { admin, data } = clientsFor(baseUrl, "connect", adminToken);
    const policy = await admin.adminCreateApiKeyPolicy({ name: "outage", permissions: ["apikeys:verify"] });
    const cached = (await admin.adminCreateApiKey({ name: "cached", policyId: policy.policy!.id })).token;
    const uncached = (await admin.adminCreateApiKey({ name: "uncached", policyId: policy.policy!.id })).token;
    expect((await data.verifyToken({ token: cached })).valid).toBe(true);

    // Steady verify load through the whole outage: only ok or unavailable, never anything else.
    const outcomes = new Map<string, number>();
    let loading = true;
    const load = (async () => {
      const grpc = clientsFor(baseUrl, "grpc", adminToken).data;
      while (loading) {
        const code = await codeOf(grpc.verifyToken({ token: cached }, { timeoutMs: 10_000 }));
        const name = code === "ok" ? "ok" : Code[code];
        outcomes.set(name, (outcomes.get(name) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    await pgCtl("-m", "fast", "stop");
    const downAt = Date.now();

    // Within the staleness window: cached keys (the caller's and the one asked about) still answer.
    expect((await data.verifyToken({ token: cached })).valid).toBe(true);
    // Anything the cache does not hold needs the database: refused, not guessed.
    expect(await codeOf(data.verifyToken({ token: uncached }))).toBe(Code.Unavailable);
    expect(await codeOf(clientsFor(baseUrl, "connect", uncached).data.testApiKey({}))).toBe(Code.Unavailable);
    // Writes fail cleanly.
    expect(await codeOf(admin.adminCreateApiKeyPolicy({ name: "written-during-outage", permissions: [] }))).toBe(Code.Unavailable);
    expect(await codeOf(admin.adminCreateApiKey({ name: "written-during-outage", policyId: policy.policy!.id }))).toBe(Code.Unavailable);
    const ready = await fetch(`${baseUrl}/readyz`);
    expect(ready.status).toBe(503);
    await ready.arrayBuffer();
    const live = await fetch(`${baseUrl}/healthz`);
    expect(live.status).toBe(200);
    await live.arrayBuffer();

    // After the staleness bound, even cached keys are refused: fail closed.
    await new Promise((r) => setTimeout(r, Math.max(0, downAt + STALENESS_SECONDS * 1000 + 500 - Date.now())));
    expect(await codeOf(data.verifyToken({ token: cached }))).toBe(Code.Unavailable);
    expect(await codeOf(clientsFor(baseUrl, "connect", cached).data.testApiKey({}))).toBe(Code.Unavailable);

    await new Promise((r) => setTimeout(r, Math.max(0, downAt + OUTAGE_MS - Date.now())));
    await startCluster();
    const downForMs = Date.now() - downAt;
    // Recovery without restart: the pool reconnects at once, the listener within its backoff.
    const deadline = Date.now() + 20_000;
    let recovered = false;
    while (!recovered && Date.now() < deadline) {
      recovered = (await codeOf(data.verifyToken({ token: uncached }))) === "ok";
      if (!recovered) await new Promise((r) => setTimeout(r, 200));
    }
    expect(recovered).toBe(true);
    const health = await data.getServiceHealth({});
    for (let i = 0; i < 50 && !health.healthy; i++) {
      await new Promise((r) => setTimeout(r, 200));
      Object.assign(health, await data.getServiceHealth({}));
    }
    expect(health.healthy).toBe(true);
    loading = false;
    await load;

    // No partial rows: what failed during the outage is absent, and can be written now.
    expect((await admin.adminGetApiKeyPolicies({})).policies.map((p) => p.name)).not.toContain("written-during-outage");
    expect((await admin.adminGetApiKeys({})).apiKeys.map((k) => k.name)).not.toContain("written-during-outage");
    await admin.adminCreateApiKeyPolicy({ name: "written-during-outage", permissions: [] });

    expect(server.child.exitCode).toBeNull();
    expect([...outcomes.keys()].sort()).toEqual(["Unavailable", "ok"]);
    console.log(`database-outage: Postgres down ${downForMs} ms; verify load outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`);
  },
  120_000,
);
