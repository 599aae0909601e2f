import type { DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
} from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InventoryService } from "../examples/inventory/src/gen/inventory/v1/inventory_pb.js";
import {
  type ApiKeysClients,
  apiKeyAuth,
  createApiKeysClients,
  KeyVerifier,
  registerPermissions,
  type VerifiedKey,
  type VerifierEvent,
  verifiedKey,
} from "@apikeys/client";
import { readConfig } from "../src/config.js";
import { InvalidationKind, VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { createLogger } from "../src/logger.js";
import { startServer } from "../src/server.js";
import { generateToken } from "../src/tokens/token.js";
import { usingPostgres } from "./helpers/database.js";
import { serviceWith } from "./helpers/descriptors.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

/** Waits (at most `ms`) for an event matching `match`; events arrive over the stream, so no fixed sleep. */
function nextEvent(events: VerifierEvent[], match: (e: VerifierEvent) => boolean, ms = 5_000): Promise<VerifierEvent> {
  const start = events.length;
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    const poll = () => {
      const found = events.slice(start).find(match);
      if (found) return resolve(found);
      if (Date.now() > deadline) return reject(new Error(`no matching event within ${ms} ms: ${JSON.stringify(events.slice(start))}`));
      setTimeout(poll, 5);
    };
    poll();
  });
}

function countingInterceptor(counts: Map<string, number>): Interceptor {
  return (next) => (req) => {
    counts.set(req.method.name, (counts.get(req.method.name) ?? 0) + 1);
    return next(req);
  };
}

let ts: TestServer;
let admin: ReturnType<typeof clientsFor>["admin"];
let serviceToken: string;

async function createKey(name: string, permissions: string[]) {
  const policy = await admin.adminCreateApiKeyPolicy({ name: `${name}-policy`, permissions });
  const key = await admin.adminCreateApiKey({ name, policyId: policy.policy!.id });
  return { token: key.token, keyId: key.apiKey!.id, policyId: policy.policy!.id };
}

beforeAll(async () => {
  ts = await startTestServer();
  admin = clientsFor(ts.baseUrl, "connect", ts.adminToken).admin;
  serviceToken = (await createKey("inventory-service", ["apikeys:verify", "apikeys:permissions.register"])).token;
  const { apiKeys } = createApiKeysClients({ baseUrl: ts.baseUrl, token: serviceToken });
  await registerPermissions([InventoryService], apiKeys);
});
afterAll(async () => {
  await ts?.stop();
});

describe("WatchInvalidations", () => {
  it("opens with a resync, then relays key and policy events", async () => {
    const { apiKeys } = createApiKeysClients({ baseUrl: ts.baseUrl, token: serviceToken });
    const abort = new AbortController();
    const stream = apiKeys.watchInvalidations({}, { signal: abort.signal, timeoutMs: 0 })[Symbol.asyncIterator]();
    const first = await stream.next();
    expect(first.value.event.case).toBe("resync");
    const key = await createKey("watched", ["inventory:items.read"]);
    await admin.adminUpdateApiKeyPolicy({ id: key.policyId, permissions: ["inventory:items.write"] });
    let event = (await stream.next()).value.event;
    // Creating a key may announce it too; skip to the policy event.
    while (!(event.case === "invalidation" && event.value.kind === InvalidationKind.POLICY)) event = (await stream.next()).value.event;
    expect(event.value).toMatchObject({ kind: InvalidationKind.POLICY, id: key.policyId });
    await admin.adminDeleteApiKey({ id: key.keyId });
    event = (await stream.next()).value.event;
    expect(event.case === "invalidation" && event.value).toMatchObject({ kind: InvalidationKind.KEY, id: key.keyId });
    abort.abort();
  });

  it("needs apikeys:verify", async () => {
    const weak = await createKey("no-verify", ["inventory:items.read"]);
    const { apiKeys } = createApiKeysClients({ baseUrl: ts.baseUrl, token: weak.token });
    const stream = apiKeys.watchInvalidations({}, { timeoutMs: 0 })[Symbol.asyncIterator]();
    const error = await stream.next().then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(error?.code).toBe(Code.PermissionDenied);
    expect(error?.rawMessage).toContain("apikeys:verify");
  });
});

describe("KeyVerifier", () => {
  let counts: Map<string, number>;
  let clients: ApiKeysClients;
  let verifier: KeyVerifier;
  const events: VerifierEvent[] = [];

  beforeAll(async () => {
    counts = new Map();
    clients = createApiKeysClients({ baseUrl: ts.baseUrl, token: serviceToken, interceptors: [countingInterceptor(counts)] });
    verifier = new KeyVerifier({ client: clients.apiKeys, onEvent: (e) => events.push(e) });
    await nextEvent(events, (e) => e.type === "resync");
  });
  afterAll(async () => {
    await verifier?.close();
  });

  it("answers a cached token with no call to apikeys", async () => {
    const key = await createKey("cached", ["inventory:items.read"]);
    const first = await verifier.verify(key.token);
    expect(first.valid).toBe(true);
    expect(counts.get("VerifyToken")).toBe(1);
    const before = new Map(counts);
    for (let i = 0; i < 200; i++) expect((await verifier.verify(key.token)).valid).toBe(true);
    // The transport saw no request at all: not VerifyToken, not anything else.
    expect(counts).toEqual(before);
    expect(verifier.remoteCalls).toBe(1);
  });

  it("refuses malformed tokens without I/O and caches unknown ones briefly", async () => {
    const calls = verifier.remoteCalls;
    const garbage = await verifier.verify("ak_not-a-token");
    expect(garbage).toEqual({ valid: false, code: VerifyCode.NOT_FOUND });
    // The right length with a wrong checksum: refused offline too (the cache is asked first, the format on a miss).
    const real = generateToken("ak");
    const badChecksum = real.slice(0, -1) + (real.endsWith("A") ? "B" : "A");
    expect(await verifier.verify(badChecksum)).toEqual({ valid: false, code: VerifyCode.NOT_FOUND });
    expect(verifier.remoteCalls).toBe(calls);
    const unknown = generateToken("ak");
    const verdicts = await Promise.all(Array.from({ length: 50 }, () => verifier.verify(unknown)));
    for (const v of [...verdicts, await verifier.verify(unknown)]) expect(v).toMatchObject({ valid: false, code: VerifyCode.NOT_FOUND });
    // Fifty concurrent and one later verification of the same unknown token: one RPC.
    expect(verifier.remoteCalls).toBe(calls + 1);
  });

  it("evicts on a policy change and on key deletion, as the events arrive", async () => {
    const key = await createKey("evicted", ["inventory:items.read"]);
    const before = await verifier.verify(key.token);
    expect(before.valid && before.key.permissions).toEqual(["inventory:items.read"]);
    const policyEvent = nextEvent(events, (e) => e.type === "invalidation" && e.kind === "policy" && e.id === key.policyId);
    await admin.adminUpdateApiKeyPolicy({ id: key.policyId, permissions: ["inventory:items.write"] });
    await policyEvent;
    const after = await verifier.verify(key.token);
    expect(after.valid && after.key.permissions).toEqual(["inventory:items.write"]);

    const keyEvent = nextEvent(events, (e) => e.type === "invalidation" && e.kind === "key" && e.id === key.keyId);
    await admin.adminUpdateApiKey({ id: key.keyId, enabled: false });
    await keyEvent;
    expect(await verifier.verify(key.token)).toMatchObject({ valid: false, code: VerifyCode.DISABLED });

    const reenabled = nextEvent(events, (e) => e.type === "invalidation" && e.kind === "key" && e.id === key.keyId);
    await admin.adminUpdateApiKey({ id: key.keyId, enabled: true });
    await reenabled;
    // The refusal was cached against the key, so the event lifted it at once.
    expect((await verifier.verify(key.token)).valid).toBe(true);

    const deleted = nextEvent(events, (e) => e.type === "invalidation" && e.kind === "key" && e.id === key.keyId);
    await admin.adminDeleteApiKey({ id: key.keyId });
    await deleted;
    expect(await verifier.verify(key.token)).toMatchObject({ valid: false, code: VerifyCode.NOT_FOUND });
  });

  it("never caches a key with credits, nor its USAGE_EXCEEDED refusal: every call spends, a top-up counts at once", async () => {
    const key = await createKey("metered", ["inventory:items.read"]);
    await admin.adminUpdateApiKey({ id: key.keyId, remaining: 3n, updateMask: { paths: ["remaining"] } });
    const calls = verifier.remoteCalls;
    const verdicts = [];
    for (let i = 0; i < 5; i++) verdicts.push(await verifier.verify(key.token));
    expect(verdicts.map((v) => (v.valid ? "VALID" : VerifyCode[v.code]))).toEqual(["VALID", "VALID", "VALID", "USAGE_EXCEEDED", "USAGE_EXCEEDED"]);
    expect(verifier.remoteCalls).toBe(calls + 5);
    expect((await admin.adminGetApiKey({ id: key.keyId })).apiKey?.remaining).toBe(0n);
    // No invalidation is awaited: the refusal was never cached, so the next call asks again.
    await admin.adminUpdateApiKey({ id: key.keyId, remaining: 1n, updateMask: { paths: ["remaining"] } });
    expect((await verifier.verify(key.token)).valid).toBe(true);
  });

  it("reports apikeys being unreachable as unavailable", async () => {
    const { apiKeys } = createApiKeysClients({ baseUrl: "http://127.0.0.1:1", token: serviceToken, timeoutMs: 1_000 });
    const offline = new KeyVerifier({ client: apiKeys, watch: false });
    const error = await offline.verify(generateToken("ak")).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(error?.code).toBe(Code.Unavailable);
    expect(error?.rawMessage).toMatch(/^cannot verify API keys/);
    await offline.close();
  });
});

describe.skipIf(!usingPostgres)("two instances on one Postgres (skipped on PGlite: one process per database)", () => {
  it("an admin change on instance A reaches an SDK subscribed to instance B", async () => {
    const config = readConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      DATABASE_URL: ts.database.url,
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
      DATABASE_POOL_SIZE: "3",
    });
    const b = await startServer(config, createLogger(config.logLevel));
    const events: VerifierEvent[] = [];
    const onB = new KeyVerifier({
      client: createApiKeysClients({ baseUrl: `http://127.0.0.1:${b.port}`, token: serviceToken }).apiKeys,
      onEvent: (e) => events.push(e),
    });
    try {
      await nextEvent(events, (e) => e.type === "resync");
      const key = await createKey("cross-instance", ["inventory:items.read"]);
      expect((await onB.verify(key.token)).valid).toBe(true);
      const deleted = nextEvent(events, (e) => e.type === "invalidation" && e.kind === "key" && e.id === key.keyId);
      await admin.adminDeleteApiKey({ id: key.keyId }); // admin talks to instance A
      await deleted;
      expect(await onB.verify(key.token)).toMatchObject({ valid: false, code: VerifyCode.NOT_FOUND });
    } finally {
      await onB.close();
      await b.stop();
    }
  });
});

describe.skipIf(!usingPostgres)("server listener loss (skipped on PGlite: its listener cannot drop)", () => {
  it("ends the streams of an instance whose LISTEN connection dropped, then resyncs them", async () => {
    const events: VerifierEvent[] = [];
    const verifier = new KeyVerifier({
      client: createApiKeysClients({ baseUrl: ts.baseUrl, token: serviceToken }).apiKeys,
      minBackoffMs: 10,
      onEvent: (e) => events.push(e),
    });
    const resynced = nextEvent(events, (e) => e.type === "resync");
    const pgAdmin = new pg.Client({ connectionString: ts.database.url });
    await pgAdmin.connect();
    try {
      await resynced;
      const lost = nextEvent(events, (e) => e.type === "disconnect");
      const { rowCount } = await pgAdmin.query(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query like 'LISTEN%'",
      );
      expect(rowCount).toBe(1);
      const event = await lost;
      expect(event.type === "disconnect" && event.error.rawMessage).toMatch(/listener down/);
      // Once the server listens again, the SDK is let back in and told to drop its cache.
      await nextEvent(events, (e) => e.type === "resync", 10_000);
      expect(verifier.connected).toBe(true);
    } finally {
      await pgAdmin.end();
      await verifier.close();
    }
  });
});

describe("apiKeyAuth", () => {
  let verifier: KeyVerifier;
  const events: VerifierEvent[] = [];
  beforeAll(async () => {
    const { apiKeys } = createApiKeysClients({ baseUrl: ts.baseUrl, token: serviceToken, timeoutMs: 300 });
    verifier = new KeyVerifier({ client: apiKeys, onEvent: (e) => events.push(e) });
    await nextEvent(events, (e) => e.type === "resync");
  });
  afterAll(async () => {
    await verifier?.close();
  });

  /** A served service with one method per kind of requirement, behind the interceptor. */
  function protectedClient(token: string | undefined, seen: Array<VerifiedKey | undefined>) {
    const service = serviceWith({
      declares: { service: "inventory", names: ["items.read", "items.write"] },
      methods: [
        { name: "Open", auth: { public: true } },
        { name: "AnyKey", auth: { anyKey: true } },
        { name: "Either", auth: { anyOf: ["inventory:items.write", "inventory:items.read"] } },
        { name: "Both", auth: { allOf: ["inventory:items.read", "inventory:items.write"] } },
        { name: "Bare" },
      ],
    });
    const handler = (_req: unknown, ctx: HandlerContext) => {
      seen.push(ctx.values.get(verifiedKey));
      return {};
    };
    const transport = createRouterTransport(
      (router) => router.service(service, Object.fromEntries(service.methods.map((m) => [m.localName, handler])) as ServiceImpl<DescService>),
      {
        router: { interceptors: [apiKeyAuth({ verifier })] },
        transport: {
          interceptors: token === undefined ? [] : [(next) => (req) => (req.header.set("x-api-key", token), next(req))],
        },
      },
    );
    const client = createClient(service, transport) as unknown as Record<string, (req: object) => Promise<unknown>>;
    return (method: string) =>
      client[method]!({}).then(
        () => "ok",
        (e: unknown) => `${Code[ConnectError.from(e).code]}: ${ConnectError.from(e).rawMessage}`,
      );
  }

  it("enforces each method's own requirement and hands the key to the handler", async () => {
    const reader = await createKey("interceptor-reader", ["inventory:items.read"]);
    const seen: Array<VerifiedKey | undefined> = [];
    const call = protectedClient(reader.token, seen);
    expect(await call("open")).toBe("ok");
    expect(await call("anyKey")).toBe("ok");
    expect(await call("either")).toBe("ok");
    expect(await call("both")).toBe("PermissionDenied: API key lacks permission inventory:items.write");
    expect(await call("bare")).toBe("PermissionDenied: Bare has no access rule");
    expect(seen.map((k) => k?.id)).toEqual([undefined, reader.keyId, reader.keyId]);
    expect(seen[1]).toMatchObject({ name: "interceptor-reader", policy: { id: reader.policyId }, permissions: ["inventory:items.read"] });
  });

  it("refuses missing, malformed and unknown keys as unauthenticated", async () => {
    expect(await protectedClient(undefined, [])("anyKey")).toBe(
      "Unauthenticated: missing API key: send 'Authorization: Bearer <token>' or 'x-api-key: <token>'",
    );
    expect(await protectedClient("ak_typo", [])("anyKey")).toBe("Unauthenticated: invalid API key");
    expect(await protectedClient(generateToken("ak"), [])("anyKey")).toBe("Unauthenticated: invalid API key");
    expect(await protectedClient(undefined, [])("open")).toBe("ok");
  });

  it("keeps the invalidation stream open past the unary deadline", async () => {
    const before = events.length;
    await new Promise((r) => setTimeout(r, 600)); // two unary deadlines of this client
    expect(verifier.connected).toBe(true);
    expect(events.slice(before).filter((e) => e.type === "disconnect")).toEqual([]);
  });
});

describe("stream lifecycle", () => {
  it("reports a stream it may not open, and keeps retrying", async () => {
    const weak = await createKey("cannot-watch", ["inventory:items.read"]);
    const events: VerifierEvent[] = [];
    const verifier = new KeyVerifier({
      client: createApiKeysClients({ baseUrl: ts.baseUrl, token: weak.token }).apiKeys,
      minBackoffMs: 10,
      onEvent: (e) => events.push(e),
    });
    try {
      const first = await nextEvent(events, (e) => e.type === "disconnect");
      expect(first.type === "disconnect" && first.error.code).toBe(Code.PermissionDenied);
      await nextEvent(events, (e) => e.type === "disconnect");
      expect(verifier.connected).toBe(false);
    } finally {
      await verifier.close();
    }
  });

  it("ends open streams at once when the server stops, instead of holding its shutdown", async () => {
    const other = await startTestServer({ APIKEYS_SHUTDOWN_GRACE_SECONDS: "10" });
    const otherAdmin = clientsFor(other.baseUrl, "connect", other.adminToken).admin;
    const policy = await otherAdmin.adminCreateApiKeyPolicy({ name: "watcher", permissions: ["apikeys:verify"] });
    const key = await otherAdmin.adminCreateApiKey({ name: "watcher", policyId: policy.policy!.id });
    const events: VerifierEvent[] = [];
    const verifier = new KeyVerifier({
      client: createApiKeysClients({ baseUrl: other.baseUrl, token: key.token }).apiKeys,
      onEvent: (e) => events.push(e),
    });
    try {
      await nextEvent(events, (e) => e.type === "resync");
      const lost = nextEvent(events, (e) => e.type === "disconnect");
      const started = Date.now();
      await other.stop();
      expect(Date.now() - started).toBeLessThan(5_000);
      const event = await lost;
      expect(event.type === "disconnect" && event.error.code).toBe(Code.Unavailable);
      expect(verifier.connected).toBe(false);
    } finally {
      await verifier.close();
    }
  });
});
