import type { Client } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readConfig } from "../src/config.js";
import { ApiKeysAdminService } from "../src/gen/apikeys/v1/admin_pb.js";
import { type ApiKeysService, VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { createLogger } from "../src/logger.js";
import { type Server, startServer } from "../src/server.js";
import { generateToken } from "../src/tokens/token.js";
import { codeOf } from "./helpers/errors.js";
import { type TestServer, clientsFor, startTestServer } from "./helpers/server.js";
import { type ThrowawayPostgres, canRunThrowawayPostgres, startThrowawayPostgres } from "./helpers/throwaway-postgres.js";

/*
 * The write path (src/db/write.ts), for every write RPC of the admin service —
 * the list comes from the service's descriptor, so a new write RPC without a
 * case here fails:
 *  - its audit success row is written inside the change's transaction: when that
 *    insert fails, the call fails and nothing of the change is left;
 *  - the instance that made the change answers its next VerifyToken with the
 *    change, before any NOTIFY arrives (its own eviction, after commit).
 */

type Admin = Client<typeof ApiKeysAdminService>;
type Data = Client<typeof ApiKeysService>;

const WRITE_RPCS = ApiKeysAdminService.methods
  .filter((m) => m.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS)
  .map((m) => m.localName)
  .sort();

/** What one case needs: a client and a prefix that keeps its fixtures apart. */
interface Fixture {
  admin: Admin;
  data: Data;
  n: string;
  policyId: string;
}

/** Makes what a write RPC acts on and returns its request. */
type Prepare = (f: Fixture) => Promise<Record<string, unknown>>;

const key = async (f: Fixture, name: string, extra: Record<string, unknown> = {}) =>
  f.admin.adminCreateApiKey({ name: `${f.n}-${name}`, policyId: f.policyId, ...extra });
const consumer = async (f: Fixture, name: string) => (await f.admin.adminCreateConsumer({ username: `${f.n}-${name}` })).consumer!;

const PREPARE: Record<string, Prepare> = {
  adminCreateApiKey: async (f) => ({ name: `${f.n}-new`, policyId: f.policyId }),
  adminUpdateApiKey: async (f) => ({ id: (await key(f, "upd")).apiKey!.id, enabled: false }),
  adminRotateApiKey: async (f) => ({ id: (await key(f, "rot")).apiKey!.id }),
  adminRevokePreviousToken: async (f) => {
    const id = (await key(f, "rev")).apiKey!.id;
    await f.admin.adminRotateApiKey({ id, gracePeriod: { seconds: 3600n } });
    return { id };
  },
  adminDeleteApiKey: async (f) => ({ id: (await key(f, "del")).apiKey!.id }),
  adminCreateApiKeyPolicy: async (f) => ({ name: `${f.n}-policy`, permissions: ["svc:read"] }),
  adminUpdateApiKeyPolicy: async (f) => ({
    id: (await f.admin.adminCreateApiKeyPolicy({ name: `${f.n}-updpolicy`, permissions: ["svc:read"] })).policy!.id,
    permissions: ["svc:write"],
  }),
  adminDeleteApiKeyPolicy: async (f) => {
    const id = (await f.admin.adminCreateApiKeyPolicy({ name: `${f.n}-delpolicy`, permissions: ["svc:read"] })).policy!.id;
    await f.admin.adminCreateApiKey({ name: `${f.n}-delpolicy-key`, policyId: id });
    return { id };
  },
  adminCreateConsumer: async (f) => ({ username: `${f.n}-consumer` }),
  adminDeleteConsumer: async (f) => {
    const c = await consumer(f, "delconsumer");
    await f.admin.adminGrantConsumerPolicies({ consumer: c.id, policyIds: [f.policyId] });
    await key(f, "delconsumer-key", { consumer: c.id });
    return { consumer: c.id };
  },
  adminGrantConsumerPolicies: async (f) => ({ consumer: (await consumer(f, "grant")).id, policyIds: [f.policyId] }),
  adminRevokeConsumerPolicies: async (f) => {
    const c = await consumer(f, "revoke");
    await f.admin.adminGrantConsumerPolicies({ consumer: c.id, policyIds: [f.policyId] });
    return { consumer: c.id, policyIds: [f.policyId] };
  },
};

function call(admin: Admin, rpc: string, request: Record<string, unknown>): Promise<unknown> {
  return (admin as unknown as Record<string, (r: unknown) => Promise<unknown>>)[rpc]!(request);
}

it("has a case for every write RPC of the admin service", () => {
  expect(Object.keys(PREPARE).sort()).toEqual(WRITE_RPCS);
  expect(Object.keys(VERDICT_CHECKS).sort()).toEqual(WRITE_RPCS);
});

describe("the audit success row shares the change's transaction", () => {
  let t: TestServer;
  let f: Fixture;

  /** Every row an admin write can touch, minus last-used times (written in the background). */
  async function snapshot(): Promise<string> {
    const tables = ["policies", "policy_permissions", "api_keys", "consumers", "consumer_policies", "signing_secrets", "deleted_api_keys"];
    const parts: string[] = [];
    for (const table of tables) {
      const { rows } = await sql<{ rows: string | null }>`
        select string_agg((to_jsonb(x) - 'last_used_on')::text, '|' order by (to_jsonb(x) - 'last_used_on')::text) as rows
        from ${sql.table(table)} x`.execute(t.server.ctx.db);
      parts.push(`${table}:${rows[0]?.rows ?? ""}`);
    }
    return parts.join("\n");
  }

  beforeAll(async () => {
    t = await startTestServer();
    const { admin, data } = clientsFor(t.baseUrl, "connect", t.adminToken);
    await data.registerPermissions({ service: "svc", permissions: [{ name: "read" }, { name: "write" }] });
    const policyId = (await admin.adminCreateApiKeyPolicy({ name: "audit-tx", permissions: ["svc:read"] })).policy!.id;
    f = { admin, data, n: "audit-tx", policyId };
    // Refuses the success row of the RPCs named in a table of the test's own: only the call under test is affected.
    await sql`create table refused_audit_rpcs (rpc text primary key)`.execute(t.server.ctx.db);
    await sql`
      create function refuse_audit_success() returns trigger language plpgsql as $$
      begin
        if new.stage = 'success' and exists (select 1 from refused_audit_rpcs r where r.rpc = new.rpc) then
          raise exception 'audit success refused by the test';
        end if;
        return new;
      end $$`.execute(t.server.ctx.db);
    await sql`create trigger refuse_audit_success before insert on audit_events for each row execute function refuse_audit_success()`.execute(
      t.server.ctx.db,
    );
  });
  afterAll(() => t?.stop());

  it.each(WRITE_RPCS)("%s: a failed audit success row rolls back the change; then it commits with its row", async (rpc) => {
    const request = await PREPARE[rpc]!({ ...f, n: `audit-tx-${rpc}` });
    const method = ApiKeysAdminService.methods.find((m) => m.localName === rpc)!;
    const rpcName = `${ApiKeysAdminService.typeName}/${method.name}`;
    const before = await snapshot();
    await sql`insert into refused_audit_rpcs values (${rpcName})`.execute(t.server.ctx.db);
    try {
      expect(await codeOf(call(f.admin, rpc, request))).toBe(Code.Internal);
    } finally {
      await sql`delete from refused_audit_rpcs`.execute(t.server.ctx.db);
    }
    expect(await snapshot()).toBe(before);

    await call(f.admin, rpc, request);
    expect(await snapshot()).not.toBe(before);
    const { rows } = await sql<{ stage: string }>`
      select stage from audit_events where rpc = ${rpcName} order by id desc limit 2`.execute(t.server.ctx.db);
    expect(rows.map((r) => r.stage)).toEqual(["success", "attempt"]);
  });
});

/**
 * For each write RPC: what makes a verdict to check (cached before the write
 * while the instance hears no NOTIFY), and what VerifyToken must answer after.
 */
interface VerdictCheck {
  /** Prepares the write and returns the request, the token to verify and the requirement. */
  setup(f: Fixture): Promise<{ request: Record<string, unknown>; token: string; allOf?: string[] }>;
  /** The token (default: setup's) and the code expected right after the write. */
  after: VerifyCode | ((response: Record<string, unknown>) => { token: string; code: VerifyCode });
}

const VERDICT_CHECKS: Record<string, VerdictCheck> = {
  // Creating a key changes no verdict already cached; the new key verifies on the writer's first try.
  adminCreateApiKey: {
    setup: async (f) => ({ request: { name: `${f.n}-new`, policyId: f.policyId }, token: (await key(f, "bystander")).token }),
    after: (res) => ({ token: res.token as string, code: VerifyCode.VALID }),
  },
  adminUpdateApiKey: {
    setup: async (f) => {
      const k = await key(f, "upd");
      return { request: { id: k.apiKey!.id, enabled: false }, token: k.token };
    },
    after: VerifyCode.DISABLED,
  },
  adminRotateApiKey: {
    setup: async (f) => {
      const k = await key(f, "rot");
      return { request: { id: k.apiKey!.id }, token: k.token };
    },
    after: VerifyCode.NOT_FOUND,
  },
  adminRevokePreviousToken: {
    setup: async (f) => {
      const k = await key(f, "rev");
      await f.admin.adminRotateApiKey({ id: k.apiKey!.id, gracePeriod: { seconds: 3600n } });
      return { request: { id: k.apiKey!.id }, token: k.token };
    },
    after: VerifyCode.NOT_FOUND,
  },
  adminDeleteApiKey: {
    setup: async (f) => {
      const k = await key(f, "del");
      return { request: { id: k.apiKey!.id }, token: k.token };
    },
    after: VerifyCode.NOT_FOUND,
  },
  // A new policy changes no existing key: a key of another policy keeps its verdict.
  adminCreateApiKeyPolicy: {
    setup: async (f) => ({ request: { name: `${f.n}-policy`, permissions: ["svc:write"] }, token: (await key(f, "cp")).token, allOf: ["svc:read"] }),
    after: VerifyCode.VALID,
  },
  adminUpdateApiKeyPolicy: {
    setup: async (f) => {
      const policyId = (await f.admin.adminCreateApiKeyPolicy({ name: `${f.n}-updpolicy`, permissions: ["svc:read"] })).policy!.id;
      const k = await f.admin.adminCreateApiKey({ name: `${f.n}-updpolicy-key`, policyId });
      return { request: { id: policyId, permissions: ["svc:write"] }, token: k.token, allOf: ["svc:read"] };
    },
    after: VerifyCode.INSUFFICIENT_PERMISSIONS,
  },
  adminDeleteApiKeyPolicy: {
    setup: async (f) => {
      const policyId = (await f.admin.adminCreateApiKeyPolicy({ name: `${f.n}-delpolicy`, permissions: ["svc:read"] })).policy!.id;
      const k = await f.admin.adminCreateApiKey({ name: `${f.n}-delpolicy-key`, policyId });
      return { request: { id: policyId }, token: k.token };
    },
    after: VerifyCode.NOT_FOUND,
  },
  // Consumers and grants change no key's verdict: the consumer's key keeps it.
  adminCreateConsumer: {
    setup: async (f) => ({ request: { username: `${f.n}-consumer` }, token: (await key(f, "cc")).token }),
    after: VerifyCode.VALID,
  },
  adminDeleteConsumer: {
    setup: async (f) => {
      const c = await consumer(f, "delconsumer");
      await f.admin.adminGrantConsumerPolicies({ consumer: c.id, policyIds: [f.policyId] });
      const k = await key(f, "delconsumer-key", { consumer: c.id });
      return { request: { consumer: c.id }, token: k.token };
    },
    after: VerifyCode.NOT_FOUND,
  },
  adminGrantConsumerPolicies: {
    setup: async (f) => {
      const c = await consumer(f, "grant");
      const other = (await f.admin.adminCreateApiKeyPolicy({ name: `${f.n}-grant-other`, permissions: ["svc:write"] })).policy!.id;
      await f.admin.adminGrantConsumerPolicies({ consumer: c.id, policyIds: [f.policyId] });
      const k = await key(f, "grant-key", { consumer: c.id });
      return { request: { consumer: c.id, policyIds: [other] }, token: k.token, allOf: ["svc:read"] };
    },
    after: VerifyCode.VALID,
  },
  adminRevokeConsumerPolicies: {
    setup: async (f) => {
      const c = await consumer(f, "revoke");
      const other = (await f.admin.adminCreateApiKeyPolicy({ name: `${f.n}-revoke-other`, permissions: ["svc:write"] })).policy!.id;
      await f.admin.adminGrantConsumerPolicies({ consumer: c.id, policyIds: [f.policyId, other] });
      const k = await key(f, "revoke-key", { consumer: c.id });
      return { request: { consumer: c.id, policyIds: [other] }, token: k.token, allOf: ["svc:read"] };
    },
    after: VerifyCode.VALID,
  },
};

describe.runIf(canRunThrowawayPostgres)("the writing instance's next VerifyToken sees the change, with NOTIFY withheld", () => {
  let cluster: ThrowawayPostgres;
  let server: Server;
  let f: Fixture;
  let frozenPid: number | undefined;

  beforeAll(async () => {
    cluster = await startThrowawayPostgres("write-path");
    const adminToken = generateToken("ak");
    const config = readConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      DATABASE_URL: cluster.url,
      DATABASE_POOL_SIZE: "3",
      APIKEYS_BOOTSTRAP_TOKEN: adminToken,
      // The frozen listener must not be noticed (and the cache dropped) during the test.
      APIKEYS_LISTENER_PING_SECONDS: "600",
      LOG_LEVEL: "silent",
    });
    server = await startServer(config, createLogger(config.logLevel));
    const { admin, data } = clientsFor(`http://127.0.0.1:${server.port}`, "connect", adminToken);
    await data.registerPermissions({ service: "svc", permissions: [{ name: "read" }, { name: "write" }] });
    const policyId = (await admin.adminCreateApiKeyPolicy({ name: "verify-after-write", permissions: ["svc:read"] })).policy!.id;
    f = { admin, data, n: "vaw", policyId };
    // This instance now hears nothing: its LISTEN backend is stopped; the connection stays open.
    const [pid] = await cluster.listenerPids();
    expect(pid).toBeDefined();
    frozenPid = pid!;
    process.kill(frozenPid, "SIGSTOP");
  }, 120_000);

  afterAll(async () => {
    if (frozenPid !== undefined) process.kill(frozenPid, "SIGCONT");
    await server?.stop();
    await cluster?.stop();
  });

  it("withholds NOTIFY for real: a change made behind the server's back is not seen while its verdict is cached", async () => {
    const k = await key(f, "control");
    expect((await f.data.verifyToken({ token: k.token })).code).toBe(VerifyCode.VALID);
    await sql`update api_keys set enabled = false where id = ${k.apiKey!.id}`.execute(server.ctx.db);
    await sql`select pg_notify('apikeys_invalidation', ${JSON.stringify({ kind: "key", id: k.apiKey!.id })})`.execute(server.ctx.db);
    await new Promise((r) => setTimeout(r, 200));
    expect((await f.data.verifyToken({ token: k.token })).code).toBe(VerifyCode.VALID);
  });

  it.each(WRITE_RPCS)("%s", async (rpc) => {
    const check = VERDICT_CHECKS[rpc]!;
    const fixture = { ...f, n: `vaw-${rpc}` };
    const { request, token, allOf = [] } = await check.setup(fixture);
    // Cached: the verdict before the write.
    expect((await f.data.verifyToken({ token, allOf })).code).toBe(VerifyCode.VALID);
    const response = (await call(f.admin, rpc, request)) as Record<string, unknown>;
    const expected = typeof check.after === "function" ? check.after(response) : { token, code: check.after };
    expect((await f.data.verifyToken({ token: expected.token, allOf })).code).toBe(expected.code);
  });
});
