import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { LISTENER_APPLICATION_NAME } from "../../src/db/database.js";
import { usingPostgres } from "./database.js";

/*
 * A Postgres cluster of one test file's own, for tests that freeze or stop the
 * server (never the shared one). Needs the Postgres server binaries and root
 * (it runs them as the postgres user); the Postgres pass of CI has both.
 */

const run = promisify(execFile);
const BIN = "/usr/lib/postgresql/15/bin";

/** Whether this run can start a throwaway cluster. */
export const canRunThrowawayPostgres = usingPostgres && existsSync(`${BIN}/initdb`) && process.getuid?.() === 0;

export interface ThrowawayPostgres {
  url: string;
  /** Backend PIDs of the LISTEN connections of apikeys instances now open on the cluster. */
  listenerPids(): Promise<number[]>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

export async function startThrowawayPostgres(prefix: string): Promise<ThrowawayPostgres> {
  const dir = mkdtempSync(join(tmpdir(), `apikeys-${prefix}-`));
  const asPostgres = (cmd: string, args: string[]) => run("runuser", ["-u", "postgres", "--", cmd, ...args], { timeout: 60_000 });
  const pgCtl = (...args: string[]) => asPostgres(`${BIN}/pg_ctl`, ["-D", join(dir, "data"), "-w", "-t", "30", ...args]);
  await run("chown", ["postgres:postgres", dir]);
  const port = await freePort();
  await asPostgres(`${BIN}/initdb`, ["-D", join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync"]);
  await pgCtl("-l", join(dir, "log"), "-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`, "start");
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    url,
    async listenerPids() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const { rows } = await client.query<{ pid: number }>("select pid from pg_stat_activity where application_name = $1", [
          LISTENER_APPLICATION_NAME,
        ]);
        return rows.map((r) => r.pid);
      } finally {
        await client.end();
      }
    },
    async stop() {
      await pgCtl("-m", "immediate", "stop").catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
