// Signing keys out of the box: the embedded database generates its server secret
// once into the data directory; with DATABASE_URL a missing secret only matters
// once signing keys exist. Real server processes, as `npm start` runs them.
import { Code } from "@connectrpc/connect";
import { SignJWT } from "jose";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { CredentialType } from "../src/gen/apikeys/v1/resources_pb.js";
import { generateToken } from "../src/tokens/token.js";
import { createTestDatabase, usingPostgres } from "./helpers/database.js";
import { rejection } from "./helpers/errors.js";
import { runServerToExit, type ServerProcess, spawnServer } from "./helpers/process.js";
import { clientsFor } from "./helpers/server.js";

const GENERATED = "APIKEYS_SECRET_KEY generated; set APIKEYS_SECRET_KEY in production";
const cleanups: Array<() => Promise<unknown> | void> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function spawn(env: Record<string, string>): Promise<ServerProcess> {
  // PGlite on disk starts slowly on a loaded machine.
  const server = await spawnServer(env, 120_000);
  cleanups.push(() => server.stop("SIGKILL"));
  return server;
}

/** Creates a signing key with the admin policy and returns a fresh JWT for it. */
async function createSigningKey(port: number, token: string, name: string) {
  const { admin } = clientsFor(`http://127.0.0.1:${port}`, "connect", token);
  const policyId = (await admin.adminGetApiKeyPolicies({})).policies[0]!.id;
  const created = await admin.adminCreateApiKey({ name, policyId, credentialType: CredentialType.SIGNING });
  return { id: created.apiKey!.id, secret: created.secret };
}

function jwtFor(id: string, secret: string) {
  return new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setIssuer(id).setIssuedAt().setExpirationTime("1m").sign(new TextEncoder().encode(secret));
}

async function verify(port: number, token: string, credential: string) {
  return (await clientsFor(`http://127.0.0.1:${port}`, "connect", token).data.verifyToken({ token: credential })).code;
}

describe("embedded database without APIKEYS_SECRET_KEY", () => {
  it("generates a 256-bit key once into the data directory (0600, one warning) and reuses it on later starts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "apikeys-secret-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const token = generateToken("ak");
    const env = { APIKEYS_DATA_DIR: dir, APIKEYS_BOOTSTRAP_TOKEN: token };

    const first = await spawn(env);
    expect(first.output().split(GENERATED).length - 1).toBe(1);
    const file = join(dir, "secret-key");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const stored = readFileSync(file, "utf8").trim();
    expect(Buffer.from(stored, "base64url").length).toBe(32);
    expect(first.output()).not.toContain(stored);
    const key = await createSigningKey(first.port, token, "signer");
    expect(await verify(first.port, token, await jwtFor(key.id, key.secret))).toBe(VerifyCode.VALID);
    expect(await first.stop()).toBe(0);

    const second = await spawn(env);
    expect(second.output()).not.toContain(GENERATED);
    expect(readFileSync(file, "utf8").trim()).toBe(stored);
    // The secret sealed under the first start's key still opens.
    expect(await verify(second.port, token, await jwtFor(key.id, key.secret))).toBe(VerifyCode.VALID);
    expect(await second.stop()).toBe(0);

    // A lost key file is not silently replaced: the existing signing keys could never verify again.
    rmSync(file);
    const third = await runServerToExit({ ...env, PORT: "0", HOST: "127.0.0.1" });
    expect(third.code).toBe(1);
    expect(third.output).toContain("1 signing key(s) exist but APIKEYS_SECRET_KEY is not set");
    expect(third.output).toContain(file);
    expect(existsSync(file)).toBe(false);
  }, 400_000);
});

describe.runIf(usingPostgres)("Postgres (DATABASE_URL) without APIKEYS_SECRET_KEY", () => {
  it("starts while no signing key exists, refuses to create one with failed_precondition, and refuses to start once one exists", async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const token = generateToken("ak");
    const env = { DATABASE_URL: db.url!, APIKEYS_BOOTSTRAP_TOKEN: token };

    const bare = await spawn(env);
    expect(bare.output()).not.toContain(GENERATED);
    const { admin } = clientsFor(`http://127.0.0.1:${bare.port}`, "connect", token);
    const policyId = (await admin.adminGetApiKeyPolicies({})).policies[0]!.id;
    const err = await rejection(admin.adminCreateApiKey({ name: "nope", policyId, credentialType: CredentialType.SIGNING }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toBe(
      "signing keys need a server secret: set APIKEYS_SECRET_KEY (at least 32 characters, the same on every instance) and restart the server",
    );
    await bare.stop();

    const keyed = await spawn({ ...env, APIKEYS_SECRET_KEY: "postgres-test-secret-0123456789abcdefgh" });
    await createSigningKey(keyed.port, token, "signer");
    await keyed.stop();

    const refused = await runServerToExit({ ...env, PORT: "0", HOST: "127.0.0.1" });
    expect(refused.code).toBe(1);
    expect(refused.output).toContain(
      "1 signing key(s) exist but APIKEYS_SECRET_KEY is not set: set APIKEYS_SECRET_KEY to the value they were created with",
    );
  }, 400_000);
});
