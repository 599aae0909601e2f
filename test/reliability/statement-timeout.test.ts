import { Code } from "@connectrpc/connect";
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codeOf } from "../helpers/errors.js";
import { usingPostgres } from "../helpers/database.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/*
 * A statement that stalls (a lock held elsewhere, a slow plan) fails after the
 * configured statement_timeout instead of holding its request. PGlite has no
 * statement timeout: one process, nothing else can hold a lock on it.
 */

describe.skipIf(!usingPostgres)("statement timeout (Postgres)", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ APIKEYS_STATEMENT_TIMEOUT_SECONDS: "1" });
  });
  afterAll(() => t?.stop());

  it("is set on every pooled connection", async () => {
    const started = performance.now();
    const err = await sql`select pg_sleep(30)`.execute(t.server.ctx.db).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    expect(err?.code).toBe("57014");
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("turns a request stuck behind a lock into unavailable within bounded time", async () => {
    const { admin } = clientsFor(t.baseUrl, "grpc", t.adminToken);
    const locker = new pg.Client({ connectionString: t.database.url });
    await locker.connect();
    try {
      await locker.query("begin");
      await locker.query("lock table policies in access exclusive mode");
      const started = performance.now();
      const code = await codeOf(admin.adminGetApiKeyPolicies({}));
      expect([Code.Unavailable, Code.DeadlineExceeded]).toContain(code);
      expect(performance.now() - started).toBeLessThan(5_000);
    } finally {
      await locker.query("rollback");
      await locker.end();
    }
    // Once the lock is gone, the same call works on the same pool.
    expect((await admin.adminGetApiKeyPolicies({})).policies.length).toBeGreaterThan(0);
  });
});
