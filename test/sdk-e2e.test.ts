import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InventoryService } from "../examples/inventory/src/gen/inventory/v1/inventory_pb.js";
import { generateToken } from "../src/tokens/token.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { type ServerProcess, spawnServer } from "./helpers/process.js";
import { clientsFor } from "./helpers/server.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The example service as its own process, started the way its README says. */
interface InventoryProcess {
  child: ChildProcess;
  port: number;
  output(): string;
  stop(): Promise<void>;
}

async function spawnInventory(env: Record<string, string>): Promise<InventoryProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "examples/inventory/src/main.ts"], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const match = await waitFor(() => /inventory listening on port (\d+)/.exec(out) ?? undefined, 30_000, () => out);
  return {
    child,
    port: Number(match[1]),
    output: () => out,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** Polls `probe` every 5 ms until it returns a value; fails after `ms` showing `context()`. */
async function waitFor<T>(probe: () => T | undefined, ms: number, context: () => string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms; output:\n${context()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Waits for `line` to appear in the example's output after offset `from`: the SDK logs each event it applies. */
function logged(inventory: InventoryProcess, line: string, from: number, ms = 5_000): Promise<true> {
  return waitFor(() => (inventory.output().slice(from).includes(line) ? true : undefined), ms, () => inventory.output());
}

function inventoryClient(port: number, token?: string) {
  return createClient(
    InventoryService,
    createConnectTransport({
      baseUrl: `http://127.0.0.1:${port}`,
      httpVersion: "1.1",
      interceptors: token === undefined ? [] : [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))],
    }),
  );
}

async function codeOf(call: Promise<unknown>): Promise<{ code: Code; message: string } | "ok"> {
  try {
    await call;
    return "ok";
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
}

describe("example inventory service protected by the SDK (real processes)", () => {
  let database: TestDatabase;
  let dataDir: string | undefined;
  let env: Record<string, string>;
  let apikeys: ServerProcess;
  let inventory: InventoryProcess;
  let admin: ReturnType<typeof clientsFor>["admin"];
  const adminToken = generateToken("ak");

  beforeAll(async () => {
    database = await createTestDatabase();
    // PGlite needs a directory that outlives one process, for the restart below.
    dataDir = database.url === undefined ? mkdtempSync(join(tmpdir(), "apikeys-sdk-e2e-")) : undefined;
    env = {
      APIKEYS_BOOTSTRAP_TOKEN: adminToken,
      LOG_LEVEL: "info",
      ...(database.url === undefined ? { APIKEYS_DATA_DIR: dataDir! } : { DATABASE_URL: database.url }),
    };
    apikeys = await spawnServer(env);
    const baseUrl = `http://127.0.0.1:${apikeys.port}`;
    admin = clientsFor(baseUrl, "connect", adminToken).admin;
    const servicePolicy = await admin.adminCreateApiKeyPolicy({
      name: "inventory-service",
      permissions: ["apikeys:verify", "apikeys:permissions.register"],
    });
    const serviceKey = await admin.adminCreateApiKey({ name: "inventory-service", policyId: servicePolicy.policy!.id });
    inventory = await spawnInventory({ APIKEYS_URL: baseUrl, APIKEYS_TOKEN: serviceKey.token });
    await logged(inventory, "apikeys: invalidation stream resynced", 0);
  }, 90_000);

  afterAll(async () => {
    await inventory?.stop();
    await apikeys?.stop();
    await database?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  async function keyWith(name: string, permissions: string[]) {
    const policy = await admin.adminCreateApiKeyPolicy({ name: `${name}-policy`, permissions });
    const key = await admin.adminCreateApiKey({ name, policyId: policy.policy!.id });
    return { token: key.token, keyId: key.apiKey!.id, policyId: policy.policy!.id };
  }

  it("registered the example's permissions at start", async () => {
    const { permissions } = await admin.adminGetApiKeyPermissions({});
    const declared = permissions.filter((p) => p.service === "inventory").map((p) => [p.name, p.description, p.deprecated]);
    expect(declared).toEqual([
      ["inventory:items.read", "Look up items and their stock levels.", false],
      ["inventory:items.write", "Change stock levels.", false],
    ]);
  });

  it("lets a key with the right policy in and turns others away with the right code", async () => {
    const reader = await keyWith("reader", ["inventory:items.read"]);
    const client = inventoryClient(inventory.port, reader.token);
    const { item } = await client.getItem({ sku: "bolt-m8" });
    expect(item?.name).toBe("Hex bolt M8");
    const me = await client.whoAmI({});
    expect(me).toMatchObject({ keyId: reader.keyId, keyName: "reader", permissions: ["inventory:items.read"] });
    expect(await codeOf(client.adjustStock({ sku: "bolt-m8", delta: 1n }))).toEqual({
      code: Code.PermissionDenied,
      message: "API key lacks permission inventory:items.write",
    });
    expect(await codeOf(inventoryClient(inventory.port).getItem({ sku: "bolt-m8" }))).toMatchObject({ code: Code.Unauthenticated });
    expect(await codeOf(inventoryClient(inventory.port, "ak_garbage").getItem({ sku: "bolt-m8" }))).toMatchObject({
      code: Code.Unauthenticated,
      message: "invalid API key",
    });
    expect(await codeOf(inventoryClient(inventory.port, generateToken("ak")).getItem({ sku: "bolt-m8" }))).toMatchObject({
      code: Code.Unauthenticated,
    });
  });

  it("honours a policy change and a key deletion on the next call", async () => {
    const clerk = await keyWith("clerk", ["inventory:items.read"]);
    const client = inventoryClient(inventory.port, clerk.token);
    await client.getItem({ sku: "nut-m8" });
    await client.getItem({ sku: "nut-m8" }); // now answered from the SDK's cache

    let mark = inventory.output().length;
    await admin.adminUpdateApiKeyPolicy({ id: clerk.policyId, permissions: ["inventory:items.read", "inventory:items.write"] });
    await logged(inventory, `apikeys: evicted policy ${clerk.policyId}`, mark);
    expect((await client.adjustStock({ sku: "nut-m8", delta: -5n })).item?.quantity).toBe(795n);

    mark = inventory.output().length;
    await admin.adminUpdateApiKeyPolicy({ id: clerk.policyId, permissions: ["inventory:items.write"] });
    await logged(inventory, `apikeys: evicted policy ${clerk.policyId}`, mark);
    expect(await codeOf(client.getItem({ sku: "nut-m8" }))).toEqual({
      code: Code.PermissionDenied,
      message: "API key lacks permission inventory:items.read",
    });

    mark = inventory.output().length;
    await admin.adminDeleteApiKey({ id: clerk.keyId });
    await logged(inventory, `apikeys: evicted key ${clerk.keyId}`, mark);
    expect(await codeOf(client.adjustStock({ sku: "nut-m8", delta: 1n }))).toEqual({
      code: Code.Unauthenticated,
      message: "invalid API key",
    });
  });

  it("reconnects after apikeys is killed and restarted, and keeps honouring revocations", async () => {
    const survivor = await keyWith("survivor", ["inventory:items.read"]);
    const client = inventoryClient(inventory.port, survivor.token);
    await client.getItem({ sku: "bolt-m8" });

    const port = apikeys.port;
    let mark = inventory.output().length;
    await apikeys.stop("SIGKILL");
    await logged(inventory, "apikeys: invalidation stream lost", mark);
    // While apikeys is down a recently verified key still works, for a short TTL only.
    await client.getItem({ sku: "bolt-m8" });

    mark = inventory.output().length;
    apikeys = await spawnServer({ ...env, PORT: String(port) });
    await logged(inventory, "apikeys: invalidation stream resynced", mark, 15_000);
    expect((await client.getItem({ sku: "bolt-m8" })).item?.sku).toBe("bolt-m8");

    mark = inventory.output().length;
    await admin.adminDeleteApiKey({ id: survivor.keyId });
    await logged(inventory, `apikeys: evicted key ${survivor.keyId}`, mark);
    expect(await codeOf(client.getItem({ sku: "bolt-m8" }))).toMatchObject({ code: Code.Unauthenticated });
  }, 60_000);
});
