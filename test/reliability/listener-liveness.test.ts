import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, expect, it } from "vitest";
import { readConfig } from "../../src/config.js";
import { VerifyCode } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { type Server, startServer } from "../../src/server.js";
import { generateToken } from "../../src/tokens/token.js";
import { usingPostgres } from "../helpers/database.js";
import { codeOf } from "../helpers/errors.js";
import { clientsFor } from "../helpers/server.js";
import { type ThrowawayPostgres, canRunThrowawayPostgres, startThrowawayPostgres } from "../helpers/throwaway-postgres.js";

/*
 * A LISTEN connection that silently stops delivering (half-open) is noticed by
 * its missed self-NOTIFY echo. Its backend is frozen with SIGSTOP on a throwaway
 * Postgres cluster of this test's own (never the shared one); two instances
 * share it, one writes, the other must not keep answering from its cache.
 * Runs in the Postgres pass; needs the Postgres server binaries and root.
 */

const PING_SECONDS = 1;
const STALENESS_SECONDS = 1;
/** A missed echo is noticed within two ping intervals of the freeze; allow as much again for a loaded machine. */
const BOUND_MS = 2 * PING_SECONDS * 1000 + STALENESS_SECONDS * 1000 + 2_000;
const canRun = canRunThrowawayPostgres;
if (usingPostgres && !canRun) {
  console.warn("listener-liveness: skipped: needs the Postgres server binaries and root to run them as the postgres user");
}

let cluster: ThrowawayPostgres | undefined;
let url: string;
let frozenPid: number | undefined;
const servers: Server[] = [];
const logLines: string[] = [];
const adminToken = generateToken("ak");

async function startInstance(name: string): Promise<Server> {
  const config = readConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    DATABASE_URL: url,
    DATABASE_POOL_SIZE: "3",
    APIKEYS_BOOTSTRAP_TOKEN: adminToken,
    APIKEYS_LISTENER_PING_SECONDS: String(PING_SECONDS),
    APIKEYS_OUTAGE_STALENESS_SECONDS: String(STALENESS_SECONDS),
  });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(...chunk.toString().split("\n").filter(Boolean).map((l) => `${name} ${l}`));
      done();
    },
  });
  const server = await startServer(config, pino({ level: "info" }, sink));
  servers.push(server);
  return server;
}

/** Backend PIDs of the LISTEN connections now open on the cluster. */
function listenerPids(): Promise<number[]> {
  return cluster!.listenerPids();
}

beforeAll(async () => {
  if (!canRun) return;
  cluster = await startThrowawayPostgres("liveness");
  url = cluster.url;
}, 120_000);

afterAll(async () => {
  if (frozenPid !== undefined) process.kill(frozenPid, "SIGCONT");
  await Promise.all(servers.map((s) => s.stop()));
  await cluster?.stop();
});

it.runIf(canRun)(
  "notices a half-open LISTEN connection by its missed echo, stops trusting its cache, says so, and recovers without restart",
  async () => {
    // The instance whose listener will freeze starts alone, so its LISTEN backend is the only one.
    const reader = await startInstance("reader");
    const [readerListener] = await listenerPids();
    expect(readerListener).toBeDefined();
    const writer = await startInstance("writer");
    const readerUrl = `http://127.0.0.1:${reader.port}`;
    const { admin } = clientsFor(`http://127.0.0.1:${writer.port}`, "connect", adminToken);
    const data = clientsFor(readerUrl, "connect", adminToken).data;
    const grpcHealth = clientsFor(readerUrl, "grpc").data;

    const policy = await admin.adminCreateApiKeyPolicy({ name: "liveness", permissions: ["apikeys:verify"] });
    const doomed = await admin.adminCreateApiKey({ name: "doomed", policyId: policy.policy!.id });
    expect((await data.verifyToken({ token: doomed.token })).valid).toBe(true);
    expect((await grpcHealth.getServiceHealth({})).healthy).toBe(true);
    const readyBefore = await fetch(`${readerUrl}/readyz`);
    expect([readyBefore.status, await readyBefore.json()]).toEqual([200, expect.objectContaining({ invalidations: "live" })]);

    // Freeze the reader's LISTEN backend: its TCP connection stays open, nothing is delivered, nothing errors.
    frozenPid = readerListener!;
    process.kill(frozenPid, "SIGSTOP");
    const frozenAt = Date.now();
    await admin.adminDeleteApiKey({ id: doomed.apiKey!.id });
    const deletedAt = Date.now();

    // Watch health and verdicts on the reader meanwhile.
    let unhealthySeen = false;
    let notReadySeen = false;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const [health, ready] = await Promise.all([grpcHealth.getServiceHealth({}), fetch(`${readerUrl}/readyz`)]);
        await ready.arrayBuffer();
        if (!health.healthy) unhealthySeen = true;
        if (ready.status === 503) notReadySeen = true;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    let refusedAt: number | undefined;
    while (refusedAt === undefined && Date.now() - deletedAt < BOUND_MS + 5_000) {
      const verdict = await data.verifyToken({ token: doomed.token }).catch(() => undefined);
      if (verdict !== undefined && !verdict.valid) {
        expect(verdict.code).toBe(VerifyCode.NOT_FOUND);
        refusedAt = Date.now();
      } else await new Promise((r) => setTimeout(r, 50));
    }
    expect(refusedAt).toBeDefined();
    expect(refusedAt! - deletedAt).toBeLessThanOrEqual(BOUND_MS);
    // The listener reconnected on a fresh backend (the frozen one still holds its old connection).
    const deadline = Date.now() + 10_000;
    let recovered = false;
    while (!recovered && Date.now() < deadline) {
      recovered = (await grpcHealth.getServiceHealth({})).healthy;
      if (!recovered) await new Promise((r) => setTimeout(r, 100));
    }
    watching = false;
    await watch;
    expect(recovered).toBe(true);
    expect(logLines.some((l) => l.startsWith("reader") && l.includes("no echo of its self-NOTIFY"))).toBe(true);
    expect(logLines.some((l) => l.startsWith("reader") && l.includes('"listening":false'))).toBe(true);
    expect([unhealthySeen, notReadySeen]).toEqual([true, true]);
    console.log(
      `listener-liveness: deleted key refused on the other instance ${refusedAt! - deletedAt} ms after the delete ` +
        `(${refusedAt! - frozenAt} ms after the freeze); unhealthy seen by polling: ${unhealthySeen}, /readyz 503 seen: ${notReadySeen}`,
    );

    // Invalidations flow again on the new connection: a change on the writer reaches the reader's cache at once.
    const second = await admin.adminCreateApiKey({ name: "second", policyId: policy.policy!.id });
    expect((await data.verifyToken({ token: second.token })).valid).toBe(true);
    await admin.adminUpdateApiKey({ id: second.apiKey!.id, enabled: false, updateMask: { paths: ["enabled"] } });
    let disabledSeen = false;
    for (let i = 0; i < 40 && !disabledSeen; i++) {
      disabledSeen = (await data.verifyToken({ token: second.token })).code === VerifyCode.DISABLED;
      if (!disabledSeen) await new Promise((r) => setTimeout(r, 25));
    }
    expect(disabledSeen).toBe(true);

    // Thawed, the old backend finds its client gone and leaves; the instance stays healthy.
    process.kill(frozenPid, "SIGCONT");
    frozenPid = undefined;
    await new Promise((r) => setTimeout(r, 2 * PING_SECONDS * 1000));
    expect((await grpcHealth.getServiceHealth({})).healthy).toBe(true);
    expect(await codeOf(data.verifyToken({ token: second.token }))).toBe("ok");
  },
  120_000,
);
