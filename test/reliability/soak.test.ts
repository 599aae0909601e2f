import { readFileSync } from "node:fs";
import { afterAll, beforeAll, expect, it } from "vitest";
import { generateToken } from "../../src/tokens/token.js";
import { createTestDatabase, type TestDatabase } from "../helpers/database.js";
import { type ServerProcess, spawnServer } from "../helpers/process.js";
import { clientsFor, PROTOCOLS } from "../helpers/server.js";

/*
 * Mixed admin and verify load against a real server process for SOAK_SECONDS
 * (default 20, for CI): zero errors, and resident memory flat once warmed up.
 */

const SECONDS = Number(process.env.SOAK_SECONDS ?? 20);
const WORKERS = 6;

let database: TestDatabase;
let server: ServerProcess;
const adminToken = generateToken("ak");

beforeAll(async () => {
  database = await createTestDatabase();
  server = await spawnServer(
    {
      APIKEYS_BOOTSTRAP_TOKEN: adminToken,
      LOG_LEVEL: "info",
      ...(database.url !== undefined ? { DATABASE_URL: database.url } : { APIKEYS_DATA_DIR: "memory://" }),
    },
    90_000,
  );
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await database?.drop();
});

function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
}

it(
  `handles ${SECONDS}s of mixed admin and verify load with no error and flat memory`,
  async () => {
    const baseUrl = `http://127.0.0.1:${server.port}`;
    const setup = clientsFor(baseUrl, "connect", adminToken);
    const policyId = (await setup.admin.adminCreateApiKeyPolicy({ name: "soak", permissions: ["apikeys:verify"] })).policy!.id;
    const stable = (await setup.admin.adminCreateApiKey({ name: "soak-stable", policyId })).token;

    const errors: string[] = [];
    let requests = 0;
    const stopAt = Date.now() + SECONDS * 1000;
    const samples: number[] = [];
    const sampler = setInterval(() => samples.push(rssBytes(server.child.pid!)), 500);

    const worker = async (w: number) => {
      const { admin, data } = clientsFor(baseUrl, PROTOCOLS[w % PROTOCOLS.length]!, adminToken);
      for (let i = 0; Date.now() < stopAt; i++) {
        const step = async () => {
          // Mostly verification, as in production, with a steady stream of key churn.
          if (i % 10 < 7) {
            const res = await data.verifyToken({ token: stable, allOf: ["apikeys:verify"] });
            if (!res.valid) throw new Error(`stable key refused: ${res.code}`);
          } else {
            const name = `soak-${w}-${i}`;
            const created = await admin.adminCreateApiKey({ name, policyId });
            requests++;
            const verdict = await data.verifyToken({ token: created.token });
            requests++;
            if (!verdict.valid) throw new Error(`fresh key refused: ${verdict.code}`);
            await admin.adminUpdateApiKey({ id: created.apiKey!.id, enabled: false });
            requests++;
            const disabled = await data.verifyToken({ token: created.token });
            requests++;
            if (disabled.valid) throw new Error("disabled key accepted");
            await admin.adminDeleteApiKey({ id: created.apiKey!.id });
            if (i % 50 === 9) {
              await admin.adminUpdateApiKeyPolicy({ id: policyId, description: `touched ${w}-${i}` });
              requests++;
            }
          }
          requests++;
        };
        try {
          await step();
        } catch (err) {
          if (errors.length < 20) errors.push(String(err));
        }
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
    clearInterval(sampler);

    expect(errors).toEqual([]);
    expect(server.child.exitCode).toBeNull();
    // Warm-up is the first quarter; after it, the last quarter's peak may not exceed the second quarter's by much.
    const quarter = Math.floor(samples.length / 4);
    const early = Math.max(...samples.slice(quarter, 2 * quarter));
    const late = Math.max(...samples.slice(3 * quarter));
    console.log(
      `soak: ${SECONDS}s, ${requests} requests (${Math.round(requests / SECONDS)}/s), RSS after warm-up ${Math.round(early / 2 ** 20)} MiB, at the end ${Math.round(late / 2 ** 20)} MiB`,
    );
    expect(late).toBeLessThan(early * 1.25 + 16 * 2 ** 20);
    expect(requests).toBeGreaterThan(SECONDS * 20);
  },
  SECONDS * 1000 + 60_000,
);
