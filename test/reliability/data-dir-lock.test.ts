import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { LOCK_FILE } from "../../src/db/data-dir-lock.js";
import { generateToken } from "../../src/tokens/token.js";
import { usingPostgres } from "../helpers/database.js";
import { runServerToExit, type ServerProcess, spawnServer } from "../helpers/process.js";
import { clientsFor } from "../helpers/server.js";

/*
 * The embedded store has one writer: real server processes on real PGlite
 * directories. Runs in the PGlite pass (the lock guards PGlite's files only).
 */

let root: string;
const started: ServerProcess[] = [];
const adminToken = generateToken("ak");

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "apikeys-lock-"));
});
afterAll(async () => {
  await Promise.all(started.map((s) => s.stop("SIGKILL")));
  rmSync(root, { recursive: true, force: true });
});

const env = (dir: string, extra: Record<string, string> = {}) => ({
  APIKEYS_DATA_DIR: dir,
  APIKEYS_BOOTSTRAP_TOKEN: adminToken,
  LOG_LEVEL: "info",
  ...extra,
});

async function start(dir: string): Promise<ServerProcess> {
  const server = await spawnServer(env(dir), 90_000);
  started.push(server);
  return server;
}

/** Every file under `dir` with its size, modification time and content hash. */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else {
        const stat = statSync(path);
        files[relative(dir, path)] = `${stat.size} ${stat.mtimeMs} ${createHash("sha256").update(readFileSync(path)).digest("hex")}`;
      }
    }
  };
  walk(dir);
  return files;
}

it.runIf(!usingPostgres)(
  "lets one process at a time open a data directory, binds the port before touching it, and recovers from kill -9",
  async () => {
    const dir = join(root, "data");
    const first = await start(dir);
    const { admin } = clientsFor(`http://127.0.0.1:${first.port}`, "connect", adminToken);
    await admin.adminCreateApiKeyPolicy({ name: "before-crash", permissions: [] });
    expect(readFileSync(join(dir, LOCK_FILE), "utf8")).toBe(`${first.child.pid}\n`);

    // Let the first process go quiet (it records last use of keys every 5 s), so any change is the second's.
    await new Promise((r) => setTimeout(r, 5_500));

    // A second process on the same directory exits at once, non-zero, naming the holder, having written nothing.
    const before = snapshot(dir);
    const second = await runServerToExit({ ...env(dir), PORT: "0", HOST: "127.0.0.1" });
    expect(second.code).not.toBe(0);
    expect(second.output).toContain(`data directory in use by PID ${first.child.pid}`);
    expect(snapshot(dir)).toEqual(before);
    // The first is unharmed (asked without writing anything: admin calls are audited).
    expect((await clientsFor(`http://127.0.0.1:${first.port}`, "connect").data.getServiceHealth({})).healthy).toBe(true);

    // A start whose port is taken fails before it touches any directory: not even created.
    const other = join(root, "other");
    const clash = await runServerToExit({ ...env(other), PORT: String(first.port), HOST: "127.0.0.1" });
    expect(clash.code).not.toBe(0);
    expect(clash.output).toContain("EADDRINUSE");
    expect(existsSync(other)).toBe(false);
    // Nor the one in use: same port and same directory stops at the port, and the directory is as it was.
    const sameAgain = await runServerToExit({ ...env(dir), PORT: String(first.port), HOST: "127.0.0.1" });
    expect(sameAgain.output).toContain("EADDRINUSE");
    expect(snapshot(dir)).toEqual(before);

    // kill -9 leaves a stale lock (its PID is gone): the next start takes the directory over, data intact.
    first.child.kill("SIGKILL");
    await first.exited;
    expect(readFileSync(join(dir, LOCK_FILE), "utf8")).toBe(`${first.child.pid}\n`);
    const third = await start(dir);
    expect(readFileSync(join(dir, LOCK_FILE), "utf8")).toBe(`${third.child.pid}\n`);
    const after = clientsFor(`http://127.0.0.1:${third.port}`, "connect", adminToken).admin;
    expect((await after.adminGetApiKeyPolicies({})).policies.map((p) => p.name)).toContain("before-crash");
    // A clean stop releases the lock.
    expect(await third.stop()).toBe(0);
    expect(readdirSync(dir)).not.toContain(LOCK_FILE);
  },
  240_000,
);
