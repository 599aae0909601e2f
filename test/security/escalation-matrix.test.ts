import { write } from "../../src/db/write.js";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiKeysAdminService } from "../../src/gen/apikeys/v1/admin_pb.js";
import type { ApiKeysService } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { SERVER_AUTHORITY } from "../../src/auth/authority.js";
import { createConsumer, grantPolicies } from "../../src/consumers/consumer.service.js";
import { createKey } from "../../src/keys/key.service.js";
import { createPolicy } from "../../src/policies/policy.service.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/**
 * The no-escalation rule as a matrix: every kind of admin caller × every write
 * RPC × a target below its privilege and one above it, on one server over the
 * Connect protocol; then every refusal is checked to have written nothing.
 */

type Clients = { data: Client<typeof ApiKeysService>; admin: Client<typeof ApiKeysAdminService> };
type Outcome = "ok" | "denied";
type Level = "below" | "above";

const CALLERS = ["keysW", "keysRW", "polW", "polRW", "consumersW", "register", "admin", "scoped"] as const;
type Caller = (typeof CALLERS)[number];

/** Each caller's policy (the admin's is apikeys-admin; the scoped key belongs to consumer team-a). */
const CALLER_PERMISSIONS: Record<Exclude<Caller, "admin">, string[]> = {
  keysW: ["apikeys:keys.write"],
  keysRW: ["apikeys:keys.read", "apikeys:keys.write"],
  polW: ["apikeys:policies.write"],
  polRW: ["apikeys:policies.read", "apikeys:policies.write"],
  consumersW: ["apikeys:consumers.write"],
  register: ["apikeys:permissions.register"],
  // Every write permission, yet confined to its consumer.
  scoped: [
    "apikeys:audit.read",
    "apikeys:consumers.read",
    "apikeys:consumers.write",
    "apikeys:keys.read",
    "apikeys:keys.write",
    "apikeys:permissions.register",
    "apikeys:policies.read",
    "apikeys:policies.write",
  ],
};

const RPCS = [
  "createKey",
  "updateKey",
  "moveKeyOnto",
  "moveKeyOff",
  "rotateKey",
  "deleteKey",
  "createPolicy",
  "updatePolicy",
  "setPolicyPermissions",
  "deletePolicy",
  "createConsumer",
  "grantPolicy",
  "revokePolicy",
  "deleteConsumer",
  "registerPermissions",
] as const;
type Rpc = (typeof RPCS)[number];

const KW = "apikeys:keys.write";
const PW = "apikeys:policies.write";
const CW = "apikeys:consumers.write";
/** The permission each RPC's auth option names: a caller without it never reaches the rule. */
const REQUIRED: Record<Rpc, string> = {
  createKey: KW, updateKey: KW, moveKeyOnto: KW, moveKeyOff: KW, rotateKey: KW, deleteKey: KW,
  createPolicy: PW, updatePolicy: PW, setPolicyPermissions: PW, deletePolicy: PW,
  createConsumer: CW, grantPolicy: CW, revokePolicy: CW, deleteConsumer: CW,
  registerPermissions: "apikeys:permissions.register",
};

function holds(caller: Caller, permission: string): boolean {
  return caller === "admin" || CALLER_PERMISSIONS[caller].includes(permission);
}

/** Runs `work` on every item, a few at a time (the database serves several connections). */
async function inBatches<T>(items: readonly T[], work: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += 6) await Promise.all(items.slice(i, i + 6).map(work));
}

const O = "ok";
const D = "denied";
const KEY_WRITE: Record<Caller, [Outcome, Outcome]> = {
  keysW: [O, D], keysRW: [O, D], polW: [D, D], polRW: [D, D], consumersW: [D, D], register: [D, D], admin: [O, O], scoped: [O, D],
};
const POLICY_WRITE: Record<Caller, [Outcome, Outcome]> = {
  keysW: [D, D], keysRW: [D, D], polW: [O, D], polRW: [O, D], consumersW: [D, D], register: [D, D], admin: [O, O], scoped: [D, D],
};
const CONSUMER_WRITE: Record<Caller, [Outcome, Outcome]> = {
  keysW: [D, D], keysRW: [D, D], polW: [D, D], polRW: [D, D], consumersW: [O, D], register: [D, D], admin: [O, O], scoped: [D, D],
};
/** Creating a consumer has no target: "above" is the same call. */
const CONSUMER_CREATE: Record<Caller, [Outcome, Outcome]> = {
  keysW: [D, D], keysRW: [D, D], polW: [D, D], polRW: [D, D], consumersW: [O, O], register: [D, D], admin: [O, O], scoped: [D, D],
};
/** Below: a fresh namespace of the caller's own; above: a namespace another policy registered first. */
const REGISTER: Record<Caller, [Outcome, Outcome]> = {
  keysW: [D, D], keysRW: [D, D], polW: [D, D], polRW: [D, D], consumersW: [D, D], register: [O, D], admin: [O, D], scoped: [O, D],
};

/** What each caller gets from each RPC, on a target [below, above] its privilege. */
const EXPECTED: Record<Rpc, Record<Caller, [Outcome, Outcome]>> = {
  createKey: KEY_WRITE,
  updateKey: KEY_WRITE,
  moveKeyOnto: KEY_WRITE,
  moveKeyOff: KEY_WRITE,
  rotateKey: KEY_WRITE,
  deleteKey: KEY_WRITE,
  createPolicy: POLICY_WRITE,
  updatePolicy: POLICY_WRITE,
  setPolicyPermissions: POLICY_WRITE,
  deletePolicy: POLICY_WRITE,
  createConsumer: CONSUMER_CREATE,
  grantPolicy: CONSUMER_WRITE,
  revokePolicy: CONSUMER_WRITE,
  deleteConsumer: CONSUMER_WRITE,
  registerPermissions: REGISTER,
};

let t: TestServer;
let root: Clients;
const callers = {} as Record<Caller, Clients>;
const tokens = {} as Record<Caller, string>;
/** Policies the targets use: `low` and `low2` hold no apikeys: permission, `high` holds all of them. */
const policy = {} as Record<"low" | "low2" | "high" | "owner", string>;
let allAdminPermissions: string[];
let teamA: string;
let ownerClients: Clients;

/** One cell of the matrix: the fixture root made for it, and what the call answered. */
interface Cell {
  caller: Caller;
  rpc: Rpc;
  level: Level;
  name: string;
  /** Id of the key, policy or consumer the call acts on. */
  targetId: string;
  outcome?: Outcome;
  error?: ConnectError;
}

const cells: Cell[] = [];

function targetPolicy(level: Level): string {
  return level === "below" ? policy.low : policy.high;
}

function targetPermissions(level: Level): string[] {
  return level === "below" ? ["svc:read"] : allAdminPermissions;
}

/**
 * Makes what one cell acts on, with the domain services as the server itself
 * (the RPCs are what the matrix tests; hundreds of fixtures need not be audited
 * calls); a scoped caller's keys belong to its consumer.
 */
async function prepare(cell: Cell): Promise<void> {
  const { ctx } = t.server;
  const consumer = cell.caller === "scoped" ? teamA : undefined;
  const key = async (policyId: string, name = `${cell.name}-target`, holder = consumer) =>
    (await write(ctx, undefined, (w) => createKey(w, ctx.tokens, SERVER_AUTHORITY, { name, policyId, consumer: holder, description: "before" }))).apiKey.id;
  const freshPolicy = async (permissions: string[]) =>
    (await write(ctx, undefined, (w) => createPolicy(w, SERVER_AUTHORITY, { name: `${cell.name}-target`, description: "before", permissions }))).id;
  const freshConsumer = async (granted?: string) => {
    const id = (await write(ctx, undefined, (w) => createConsumer(w, SERVER_AUTHORITY, `${cell.name}-target`))).id;
    if (granted !== undefined) await write(ctx, undefined, (w) => grantPolicies(w, SERVER_AUTHORITY, { consumer: id, policyIds: [granted] }));
    return id;
  };
  switch (cell.rpc) {
    case "updateKey":
    case "rotateKey":
    case "deleteKey":
    case "moveKeyOff":
      cell.targetId = await key(targetPolicy(cell.level));
      return;
    case "moveKeyOnto":
      cell.targetId = await key(policy.low2);
      return;
    case "updatePolicy":
    case "deletePolicy":
      cell.targetId = await freshPolicy(targetPermissions(cell.level));
      return;
    case "setPolicyPermissions":
      cell.targetId = await freshPolicy(["svc:write"]);
      return;
    case "grantPolicy":
      cell.targetId = await freshConsumer();
      return;
    case "revokePolicy":
      cell.targetId = await freshConsumer(targetPolicy(cell.level));
      return;
    case "deleteConsumer": {
      cell.targetId = await freshConsumer(targetPolicy(cell.level));
      await key(targetPolicy(cell.level), `${cell.name}-held`, cell.targetId);
      return;
    }
    case "createKey":
    case "createPolicy":
    case "createConsumer":
    case "registerPermissions":
      return;
  }
}

/** The one call a cell makes, as its caller. */
function perform(cell: Cell): Promise<unknown> {
  const { admin, data } = callers[cell.caller];
  const name = cell.name;
  switch (cell.rpc) {
    case "createKey":
      return admin.adminCreateApiKey({ name, policyId: targetPolicy(cell.level) });
    case "updateKey":
      return admin.adminUpdateApiKey({ id: cell.targetId, description: "after" });
    case "moveKeyOnto":
      return admin.adminUpdateApiKey({ id: cell.targetId, policyId: targetPolicy(cell.level) });
    case "moveKeyOff":
      return admin.adminUpdateApiKey({ id: cell.targetId, policyId: policy.low2 });
    case "rotateKey":
      return admin.adminRotateApiKey({ id: cell.targetId });
    case "deleteKey":
      return admin.adminDeleteApiKey({ id: cell.targetId });
    case "createPolicy":
      return admin.adminCreateApiKeyPolicy({ name, permissions: targetPermissions(cell.level) });
    case "updatePolicy":
      return admin.adminUpdateApiKeyPolicy({ id: cell.targetId, description: "after" });
    case "setPolicyPermissions":
      return admin.adminUpdateApiKeyPolicy({ id: cell.targetId, permissions: targetPermissions(cell.level) });
    case "deletePolicy":
      return admin.adminDeleteApiKeyPolicy({ id: cell.targetId });
    case "createConsumer":
      return admin.adminCreateConsumer({ username: name });
    case "grantPolicy":
      return admin.adminGrantConsumerPolicies({ consumer: cell.targetId, policyIds: [targetPolicy(cell.level)] });
    case "revokePolicy":
      return admin.adminRevokeConsumerPolicies({ consumer: cell.targetId, policyIds: [targetPolicy(cell.level)] });
    case "deleteConsumer":
      return admin.adminDeleteConsumer({ consumer: cell.targetId });
    case "registerPermissions":
      return data.registerPermissions({
        service: cell.level === "below" ? name : "owned",
        permissions: [{ name: "hijacked", description: "" }],
      });
  }
}

beforeAll(async () => {
  t = await startTestServer();
  root = clientsFor(t.baseUrl, "connect", t.adminToken);
  allAdminPermissions = (await root.admin.adminGetApiKeyPermissions({})).permissions
    .filter((p) => p.service === "apikeys")
    .map((p) => p.name);
  // The server's own namespace is registered at start, so svc has to be declared by someone first.
  const ownerPolicy = await root.admin.adminCreateApiKeyPolicy({ name: "svc-owner", permissions: ["apikeys:permissions.register"] });
  policy.owner = ownerPolicy.policy!.id;
  const ownerKey = await root.admin.adminCreateApiKey({ name: "svc-owner", policyId: policy.owner });
  ownerClients = clientsFor(t.baseUrl, "connect", ownerKey.token);
  await ownerClients.data.registerPermissions({ service: "svc", permissions: [{ name: "read", description: "" }, { name: "write", description: "" }] });
  await ownerClients.data.registerPermissions({ service: "owned", permissions: [{ name: "original", description: "kept" }] });

  policy.low = (await root.admin.adminCreateApiKeyPolicy({ name: "low", permissions: ["svc:read"] })).policy!.id;
  policy.low2 = (await root.admin.adminCreateApiKeyPolicy({ name: "low2", permissions: ["svc:write"] })).policy!.id;
  policy.high = (await root.admin.adminCreateApiKeyPolicy({ name: "high", permissions: allAdminPermissions })).policy!.id;
  const adminPolicy = (await root.admin.adminGetApiKeyPolicies({})).policies.find((p) => p.name === "apikeys-admin")!.id;

  teamA = (await root.admin.adminCreateConsumer({ username: "team-a" })).consumer!.id;
  for (const caller of CALLERS) {
    let policyId = adminPolicy;
    if (caller !== "admin") {
      policyId = (await root.admin.adminCreateApiKeyPolicy({ name: `caller-${caller}`, permissions: CALLER_PERMISSIONS[caller] })).policy!.id;
    }
    const consumer = caller === "scoped" ? teamA : undefined;
    if (consumer !== undefined) {
      await root.admin.adminGrantConsumerPolicies({ consumer, policyIds: [policyId, policy.low, policy.low2, policy.high] });
    }
    const created = await root.admin.adminCreateApiKey({ name: `caller-${caller}`, policyId, consumer });
    callers[caller] = clientsFor(t.baseUrl, "connect", created.token);
    tokens[caller] = created.token;
  }

  // Callers refused by the method's own permission share one target per RPC and level
  // (made for the first of them); every other cell gets a target of its own.
  const shared = new Map<string, Cell>();
  for (const caller of CALLERS) {
    for (const rpc of RPCS) {
      for (const level of ["below", "above"] as const) {
        const cell: Cell = { caller, rpc, level, name: `${caller}-${rpc}-${level}`.toLowerCase(), targetId: "" };
        cells.push(cell);
        if (!holds(caller, REQUIRED[rpc]) && !shared.has(`${rpc} ${level}`)) shared.set(`${rpc} ${level}`, cell);
      }
    }
  }
  await inBatches(
    cells.filter((c) => holds(c.caller, REQUIRED[c.rpc]) || shared.get(`${c.rpc} ${c.level}`) === c),
    prepare,
  );
  for (const cell of cells) {
    if (!holds(cell.caller, REQUIRED[cell.rpc])) cell.targetId = shared.get(`${cell.rpc} ${cell.level}`)!.targetId;
  }
  await inBatches(cells, async (cell) => {
    try {
      await perform(cell);
      cell.outcome = "ok";
    } catch (err) {
      cell.error = ConnectError.from(err);
      cell.outcome = cell.error.code === Code.PermissionDenied ? "denied" : undefined;
    }
  });
}, 120_000);

afterAll(async () => {
  await t?.stop();
});

describe("every caller × every write RPC × a target below and above its privilege", () => {
  it.each(CALLERS)("%s gets exactly the expected answers", (caller) => {
    const got: Record<string, string> = {};
    const want: Record<string, string> = {};
    for (const cell of cells.filter((c) => c.caller === caller)) {
      const key = `${cell.rpc} ${cell.level}`;
      got[key] = cell.outcome ?? `unexpected ${Code[cell.error!.code]}: ${cell.error!.rawMessage}`;
      want[key] = EXPECTED[cell.rpc][caller][cell.level === "below" ? 0 : 1];
    }
    expect(got).toEqual(want);
  });

  it("refusals for a target above the caller name what is missing", () => {
    const aboveRefusals = cells.filter(
      (c) => c.outcome === "denied" && c.level === "above" && EXPECTED[c.rpc][c.caller][0] === "ok" && c.caller !== "scoped",
    );
    expect(aboveRefusals.length).toBeGreaterThan(10);
    for (const cell of aboveRefusals) {
      if (cell.rpc === "registerPermissions") {
        expect(cell.error!.rawMessage).toMatch(/the "owned" namespace is owned by another policy, the first to register it; your key registers for its policy/);
      } else {
        expect(cell.error!.rawMessage).toMatch(/grants apikeys:\S+.* which your key lacks/);
        // Something the caller lacks, not something it has.
        const own = new Set(CALLER_PERMISSIONS[cell.caller as Exclude<Caller, "admin">]);
        const named = cell.error!.rawMessage.match(/apikeys:[a-z.]+/g)!;
        expect(named.some((p) => own.has(p))).toBe(false);
      }
    }
  });

  it("a refused call wrote nothing", async () => {
    const keys = (await root.admin.adminGetApiKeys({ pageSize: 1000 })).apiKeys;
    const keysById = new Map(keys.map((k) => [k.id, k]));
    const keyNames = new Set(keys.map((k) => k.name));
    const policies = new Map((await root.admin.adminGetApiKeyPolicies({})).policies.map((p) => [p.id, p]));
    const policyNames = new Set([...policies.values()].map((p) => p.name));
    const consumerNames = new Set((await root.admin.adminGetConsumers({ pageSize: 1000 })).consumers.map((c) => c.username));
    const permissions = (await root.admin.adminGetApiKeyPermissions({})).permissions;
    for (const cell of cells.filter((c) => c.outcome === "denied")) {
      const where = `${cell.caller} ${cell.rpc} ${cell.level}`;
      switch (cell.rpc) {
        case "createKey":
          expect(keyNames.has(cell.name), where).toBe(false);
          break;
        case "updateKey":
        case "rotateKey":
        case "deleteKey":
        case "moveKeyOff":
        case "moveKeyOnto": {
          const key = keysById.get(cell.targetId);
          expect(key, where).toBeDefined();
          expect(key!.description, where).toBe("before");
          expect(key!.updatedOn, where).toEqual(key!.createdOn);
          const policyBefore = cell.rpc === "moveKeyOnto" ? policy.low2 : targetPolicy(cell.level);
          expect(key!.policy?.id, where).toBe(policyBefore);
          break;
        }
        case "createPolicy":
          expect(policyNames.has(cell.name), where).toBe(false);
          break;
        case "updatePolicy":
        case "deletePolicy":
        case "setPolicyPermissions": {
          const found = policies.get(cell.targetId);
          expect(found?.description, where).toBe("before");
          const permissionsBefore = cell.rpc === "setPolicyPermissions" ? ["svc:write"] : targetPermissions(cell.level);
          expect(found?.permissions, where).toEqual([...permissionsBefore].sort());
          break;
        }
        case "createConsumer":
          expect(consumerNames.has(cell.name), where).toBe(false);
          break;
        case "grantPolicy":
        case "revokePolicy":
        case "deleteConsumer": {
          const { consumer, apiKeys } = await root.admin.adminGetConsumer({ consumer: cell.targetId });
          const granted = consumer!.grantedPolicies.map((p) => p.id);
          expect(granted, where).toEqual(cell.rpc === "grantPolicy" ? [] : [targetPolicy(cell.level)]);
          expect(apiKeys.length, where).toBe(cell.rpc === "deleteConsumer" ? 1 : 0);
          break;
        }
        case "registerPermissions": {
          const service = cell.level === "below" ? cell.name : "owned";
          const declared = permissions.filter((p) => p.service === service).map((p) => [p.name, p.description, p.deprecated]);
          expect(declared, where).toEqual(cell.level === "below" ? [] : [["owned:original", "kept", false]]);
          break;
        }
      }
    }
  });
});

describe("reserved namespaces", () => {
  it.each(["apikeys", "apikeys.x", "apikeys-admin", "apikeysx"])("nobody registers %s, not even a full admin", async (service) => {
    for (const caller of ["register", "admin", "scoped"] as const) {
      const err = await callers[caller].data.registerPermissions({ service, permissions: [{ name: "all", description: "" }] }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code, `${caller} ${service}`).toBe(Code.PermissionDenied);
      expect(err?.rawMessage).toContain("reserved");
    }
    const declared = (await root.admin.adminGetApiKeyPermissions({})).permissions.filter((p) => p.service === service);
    if (service === "apikeys") expect(declared.map((p) => p.name)).toEqual([...allAdminPermissions].sort());
    else expect(declared).toEqual([]);
  });

  it("the owner re-registers its own namespace, deprecating what it no longer declares", async () => {
    const answer = await ownerClients.data.registerPermissions({ service: "owned", permissions: [{ name: "original", description: "kept" }] });
    expect(answer.permissions.map((p) => p.name)).toEqual(["owned:original"]);
  });
});

describe("a consumer-scoped admin administers only its consumer's keys, within its grants", () => {
  let teamB: string;
  let teamBKey: string;
  let unownedKey: string;
  let ownKey: string;
  let ungranted: string;
  beforeAll(async () => {
    teamB = (await root.admin.adminCreateConsumer({ username: "team-b" })).consumer!.id;
    await root.admin.adminGrantConsumerPolicies({ consumer: teamB, policyIds: [policy.low] });
    teamBKey = (await root.admin.adminCreateApiKey({ name: "team-b-key", policyId: policy.low, consumer: teamB, description: "before" })).apiKey!.id;
    unownedKey = (await root.admin.adminCreateApiKey({ name: "unowned-key", policyId: policy.low, description: "before" })).apiKey!.id;
    ownKey = (await root.admin.adminCreateApiKey({ name: "team-a-key", policyId: policy.low, consumer: teamA, description: "before" })).apiKey!.id;
    ungranted = (await root.admin.adminCreateApiKeyPolicy({ name: "not-granted", permissions: ["svc:read"] })).policy!.id;
  });

  it("lists and reads only its consumer's keys", async () => {
    const scoped = callers.scoped.admin;
    const listed = (await scoped.adminGetApiKeys({ pageSize: 1000 })).apiKeys;
    expect(listed.map((k) => k.id)).toContain(ownKey);
    expect(new Set(listed.map((k) => k.consumerId))).toEqual(new Set([teamA]));
    expect((await scoped.adminGetApiKeys({ consumer: "team-a" })).apiKeys.length).toBe(listed.length);
    expect((await scoped.adminGetApiKey({ id: ownKey })).apiKey?.id).toBe(ownKey);
    for (const call of [
      () => scoped.adminGetApiKeys({ consumer: "team-b" }),
      () => scoped.adminGetApiKeys({ consumer: teamB }),
      () => scoped.adminGetApiKey({ id: teamBKey }),
      () => scoped.adminGetApiKey({ id: unownedKey }),
    ]) {
      expect((await call().then(() => undefined, (e: unknown) => ConnectError.from(e)))?.code).toBe(Code.PermissionDenied);
    }
  });

  it("cannot touch another consumer's key or an unowned one, nor give its own keys away", async () => {
    const scoped = callers.scoped.admin;
    const refused = [
      () => scoped.adminUpdateApiKey({ id: teamBKey, description: "after" }),
      () => scoped.adminRotateApiKey({ id: teamBKey }),
      () => scoped.adminDeleteApiKey({ id: teamBKey }),
      () => scoped.adminUpdateApiKey({ id: unownedKey, description: "after" }),
      () => scoped.adminRotateApiKey({ id: unownedKey }),
      () => scoped.adminDeleteApiKey({ id: unownedKey }),
      () => scoped.adminUpdateApiKey({ id: ownKey, consumer: "team-b" }),
      () => scoped.adminUpdateApiKey({ id: ownKey, updateMask: { paths: ["consumer"] } }),
      () => scoped.adminCreateApiKey({ name: "for-team-b", policyId: policy.low, consumer: "team-b" }),
    ];
    for (const call of refused) {
      const err = await call().then(() => undefined, (e: unknown) => ConnectError.from(e));
      expect(err?.code, err?.rawMessage).toBe(Code.PermissionDenied);
      expect(err?.rawMessage).toMatch(/consumer team-a/);
    }
    for (const id of [teamBKey, unownedKey, ownKey]) {
      const key = (await root.admin.adminGetApiKey({ id })).apiKey!;
      expect(key.description).toBe("before");
      expect(key.updatedOn).toEqual(key.createdOn);
    }
    expect((await root.admin.adminGetApiKey({ id: ownKey })).apiKey?.consumerId).toBe(teamA);
    const keyNames = (await root.admin.adminGetApiKeys({ pageSize: 1000 })).apiKeys.map((k) => k.name);
    expect(keyNames).not.toContain("for-team-b");
  });

  it("creates keys only for its consumer, on policies granted to it", async () => {
    const scoped = callers.scoped.admin;
    const created = await scoped.adminCreateApiKey({ name: "team-a-made", policyId: policy.low });
    expect(created.apiKey?.consumerId).toBe(teamA);
    const err = await scoped.adminCreateApiKey({ name: "team-a-ungranted", policyId: ungranted }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.FailedPrecondition);
    const moved = await scoped.adminUpdateApiKey({ id: created.apiKey!.id, policyId: policy.low2 });
    expect(moved.apiKey?.policy?.id).toBe(policy.low2);
    expect((await scoped.adminDeleteApiKey({ id: created.apiKey!.id })).apiKeyDeleted?.id).toBe(created.apiKey!.id);
  });

  it("reads only its own consumer and the policies granted to it; no audit log", async () => {
    const scoped = callers.scoped.admin;
    const granted = (await root.admin.adminGetConsumer({ consumer: teamA })).consumer!.grantedPolicies.map((p) => p.id).sort();
    expect((await scoped.adminGetApiKeyPolicies({})).policies.map((p) => p.id).sort()).toEqual(granted);
    expect((await scoped.adminGetConsumers({})).consumers.map((c) => c.username)).toEqual(["team-a"]);
    expect((await scoped.adminGetConsumer({ consumer: "team-a" })).consumer?.id).toBe(teamA);
    for (const call of [() => scoped.adminGetConsumer({ consumer: "team-b" }), () => scoped.adminGetAuditEvents({})]) {
      expect((await call().then(() => undefined, (e: unknown) => ConnectError.from(e)))?.code).toBe(Code.PermissionDenied);
    }
  });
});

describe("the same codes over gRPC and REST", () => {
  it("gRPC: a keys.write key cannot create a key on a policy above it, nor rotate one", async () => {
    const grpc = clientsFor(t.baseUrl, "grpc", tokens.keysW).admin;
    const high = (await root.admin.adminCreateApiKey({ name: "grpc-high", policyId: policy.high })).apiKey!;
    for (const call of [() => grpc.adminCreateApiKey({ name: "grpc-made", policyId: policy.high }), () => grpc.adminRotateApiKey({ id: high.id })]) {
      const err = await call().then(() => undefined, (e: unknown) => ConnectError.from(e));
      expect(err?.code).toBe(Code.PermissionDenied);
      expect(err?.rawMessage).toMatch(/policy high \(.*\) grants apikeys:.* which your key lacks/);
    }
    expect((await root.admin.adminGetApiKey({ id: high.id })).apiKey?.start).toBe(high.start);
    expect(await grpc.adminCreateApiKey({ name: "grpc-low", policyId: policy.low }).then(() => "ok")).toBe("ok");
  });

  it("REST: 403 with permission_denied for rotating a key above the caller, raising a policy and taking a namespace", async () => {
    const high = (await root.admin.adminCreateApiKey({ name: "rest-high", policyId: policy.high })).apiKey!;
    const rest = (method: string, path: string, token: string, body: unknown) =>
      fetch(`${t.baseUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      }).then(async (res) => ({ status: res.status, json: (await res.json()) as { code: number; message: string } }));
    const rotated = await rest("POST", `/api/v1/api_keys/${high.id}:rotate`, tokens.keysRW, {});
    expect(rotated.status).toBe(403);
    expect(rotated.json.code).toBe(Code.PermissionDenied);
    expect(rotated.json.message).toContain("which your key lacks");
    const target = (await root.admin.adminCreateApiKeyPolicy({ name: "rest-low", permissions: ["svc:read"] })).policy!;
    const raised = await rest("PATCH", `/api/v1/api_keys/policies/${target.id}`, tokens.polRW, { permissions: allAdminPermissions });
    expect(raised.status).toBe(403);
    expect(raised.json.code).toBe(Code.PermissionDenied);
    const after = (await root.admin.adminGetApiKeyPolicies({})).policies.find((p) => p.id === target.id)!;
    expect(after.permissions).toEqual(["svc:read"]);
    for (const service of ["owned", "apikeys.x"]) {
      const hijack = await rest("POST", "/api/v1/api_keys/permissions:register", tokens.register, {
        service,
        permissions: [{ name: "hijacked", description: "" }],
      });
      expect(hijack.status, service).toBe(403);
      expect(hijack.json.code).toBe(Code.PermissionDenied);
    }
    expect((await root.admin.adminGetApiKey({ id: high.id })).apiKey?.start).toBe(high.start);
  });
});
