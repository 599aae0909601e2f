import { toJsonString } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { SignJWT, UnsecuredJWT, generateKeyPair } from "jose";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminGetApiKeyResponseSchema } from "../src/gen/apikeys/v1/admin_pb.js";
import { VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { CredentialType } from "../src/gen/apikeys/v1/resources_pb.js";
import { codeOf, rejection } from "./helpers/errors.js";
import { pino } from "pino";
import { ConfigError, readConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { generateToken } from "../src/tokens/token.js";
import { createTestDatabase, usingPostgres } from "./helpers/database.js";
import { clientsFor, startTestServer, type TestServer } from "./helpers/server.js";

const MAX_LIFETIME = 120;
const SKEW = 10;

let t: TestServer;
let policyId: string;
beforeAll(async () => {
  t = await startTestServer({
    APIKEYS_SECRET_KEY: "jwt-test-server-secret-0123456789abcdefghij",
    APIKEYS_JWT_MAX_LIFETIME_SECONDS: String(MAX_LIFETIME),
    APIKEYS_JWT_CLOCK_SKEW_SECONDS: String(SKEW),
  });
  const { data, admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  await data.registerPermissions({ service: "reports", permissions: [{ name: "read", description: "" }, { name: "write", description: "" }] });
  policyId = (await admin.adminCreateApiKeyPolicy({ name: "reports-read", permissions: ["reports:read"] })).policy!.id;
});
afterAll(() => t.stop());

const now = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT for a signing key, as a holder would make it with jose. */
function sign(keyId: string, secret: string, claims: { iat?: number; exp?: number; jti?: string; iss?: string } = {}) {
  const iat = claims.iat ?? now();
  const jwt = new SignJWT({ ...(claims.jti !== undefined && { jti: claims.jti }) })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(claims.iss ?? keyId)
    .setIssuedAt(iat);
  if (claims.exp !== -1) jwt.setExpirationTime(claims.exp ?? iat + 60);
  return jwt.sign(new TextEncoder().encode(secret));
}

async function createSigningKey(name: string) {
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const created = await admin.adminCreateApiKey({ name, policyId, credentialType: CredentialType.SIGNING });
  return { id: created.apiKey!.id, secret: created.secret, created };
}

describe("creating a signing key", () => {
  it("returns the key id and a secret shown once, and no token", async () => {
    const { id, secret, created } = await createSigningKey("signer-created");
    expect(created.token).toBe("");
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(created.apiKey?.credentialType).toBe(CredentialType.SIGNING);
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    const fetched = await admin.adminGetApiKey({ id });
    expect(fetched.apiKey?.credentialType).toBe(CredentialType.SIGNING);
    expect(toJsonString(AdminGetApiKeyResponseSchema, fetched)).not.toContain(secret);
  });

  it("stores the secret encrypted, never in clear", async () => {
    const { id, secret } = await createSigningKey("signer-stored");
    const db = t.server.ctx.db;
    const dump = await sql<{ t: string }>`
      select (select string_agg(k::text, ' ') from api_keys k) || (select string_agg(s::text || encode(s.ciphertext, 'escape'), ' ') from signing_secrets s) as t`.execute(db);
    expect(dump.rows[0]!.t).not.toContain(secret);
    expect(dump.rows[0]!.t).not.toContain(Buffer.from(secret).toString("hex"));
    const row = await db.selectFrom("api_keys").select(["token_hash", "credential_type"]).where("id", "=", id).executeTakeFirstOrThrow();
    expect(row).toEqual({ token_hash: null, credential_type: "signing" });
  });

  it("cannot be rotated (it has no token) and refuses unknown credential types", async () => {
    const { id } = await createSigningKey("signer-rotate");
    const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
    expect(await codeOf(admin.adminRotateApiKey({ id }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(admin.adminCreateApiKey({ name: "weird", policyId, credentialType: 7 as CredentialType }))).toBe(Code.InvalidArgument);
  });

  it("without APIKEYS_SECRET_KEY works on the embedded database and is refused on Postgres", async () => {
    const bare = await startTestServer({ APIKEYS_SHUTDOWN_GRACE_SECONDS: "0" });
    try {
      const { admin } = clientsFor(bare.baseUrl, "connect", bare.adminToken);
      const pid = (await admin.adminGetApiKeyPolicies({})).policies[0]!.id;
      const created = admin.adminCreateApiKey({ name: "nope", policyId: pid, credentialType: CredentialType.SIGNING });
      if (usingPostgres) {
        const err = await rejection(created);
        expect(err.code).toBe(Code.FailedPrecondition);
        expect(err.rawMessage).toContain("set APIKEYS_SECRET_KEY");
      } else {
        // memory:// keeps a generated server secret in memory, with the database (test/secret-key covers a data directory).
        expect((await created).secret).not.toBe("");
      }
    } finally {
      await bare.stop();
    }
  });
});

describe.each(["connect", "grpc"] as const)("verifying signed credentials over %s", (protocol) => {
  const data = () => clientsFor(t.baseUrl, protocol, t.adminToken).data;
  const verify = async (token: string, allOf: string[] = ["reports:read"]) => (await data().verifyToken({ token, allOf })).code;

  it("accepts a fresh HS256 JWT and describes its key", async () => {
    const { id, secret } = await createSigningKey(`signer-ok-${protocol}`);
    const res = await data().verifyToken({ token: await sign(id, secret), allOf: ["reports:read"] });
    expect(res.code).toBe(VerifyCode.VALID);
    expect(res.valid).toBe(true);
    expect(res.apiKey?.id).toBe(id);
    expect(res.permissions).toEqual(["reports:read"]);
    expect(await verify(await sign(id, secret), ["reports:write"])).toBe(VerifyCode.INSUFFICIENT_PERMISSIONS);
    // An opaque-token verifier still refuses garbage the usual way.
    expect(await verify("ak_notatoken")).toBe(VerifyCode.NOT_FOUND);
  });

  it("authenticates calls as a bearer credential", async () => {
    const { id, secret } = await createSigningKey(`signer-bearer-${protocol}`);
    const asHolder = clientsFor(t.baseUrl, protocol, await sign(id, secret)).data;
    expect((await asHolder.testApiKey({})).apiKey?.id).toBe(id);
    const forged = clientsFor(t.baseUrl, protocol, await sign(id, "not-the-secret-at-all-0123456789abcdef")).data;
    expect(await codeOf(forged.testApiKey({}))).toBe(Code.Unauthenticated);
  });

  it("refuses alg none, other algorithms, bad signatures and tampering", async () => {
    const { id, secret } = await createSigningKey(`signer-attacks-${protocol}`);
    const key = new TextEncoder().encode(secret);
    const none = new UnsecuredJWT({}).setIssuer(id).setIssuedAt().setExpirationTime("1m").encode();
    expect(await verify(none)).toBe(VerifyCode.SIGNATURE_INVALID);
    // "none" spelled differently, with a signature part attached anyway.
    const [, body, sig] = (await sign(id, secret)).split(".");
    const noneHeader = Buffer.from(JSON.stringify({ alg: "None", typ: "JWT" })).toString("base64url");
    expect(await verify(`${noneHeader}.${body}.${sig}`)).toBe(VerifyCode.SIGNATURE_INVALID);
    expect(await verify(`${noneHeader}.${body}.`)).toBe(VerifyCode.SIGNATURE_INVALID);

    const hs512 = await new SignJWT({}).setProtectedHeader({ alg: "HS512" }).setIssuer(id).setIssuedAt().setExpirationTime("1m").sign(key);
    expect(await verify(hs512)).toBe(VerifyCode.SIGNATURE_INVALID);
    const { privateKey } = await generateKeyPair("RS256");
    const rs256 = await new SignJWT({}).setProtectedHeader({ alg: "RS256" }).setIssuer(id).setIssuedAt().setExpirationTime("1m").sign(privateKey);
    expect(await verify(rs256)).toBe(VerifyCode.SIGNATURE_INVALID);

    expect(await verify(await sign(id, `${secret}x`))).toBe(VerifyCode.SIGNATURE_INVALID);
    const [header, , signature] = (await sign(id, secret)).split(".");
    const tampered = Buffer.from(JSON.stringify({ iss: id, iat: now(), exp: now() + 60, admin: true })).toString("base64url");
    expect(await verify(`${header}.${tampered}.${signature}`)).toBe(VerifyCode.SIGNATURE_INVALID);
    // The same token with a valid signature is accepted: the refusals above are about the signature.
    expect(await verify(await sign(id, secret))).toBe(VerifyCode.VALID);
  });

  it("refuses expired tokens, future iat beyond the skew, over-long lifetimes and missing claims", async () => {
    const { id, secret } = await createSigningKey(`signer-claims-${protocol}`);
    expect(await verify(await sign(id, secret, { iat: now() - 100, exp: now() - SKEW - 5 }))).toBe(VerifyCode.EXPIRED);
    expect(await verify(await sign(id, secret, { iat: now() - 100, exp: now() - 2 }))).toBe(VerifyCode.VALID);
    expect(await verify(await sign(id, secret, { iat: now() + SKEW + 30, exp: now() + SKEW + 60 }))).toBe(VerifyCode.CLAIMS_INVALID);
    expect(await verify(await sign(id, secret, { iat: now() + 2, exp: now() + 60 }))).toBe(VerifyCode.VALID);
    expect(await verify(await sign(id, secret, { exp: now() + MAX_LIFETIME + 60 }))).toBe(VerifyCode.CLAIMS_INVALID);
    expect(await verify(await sign(id, secret, { exp: now() + MAX_LIFETIME }))).toBe(VerifyCode.VALID);
    expect(await verify(await sign(id, secret, { exp: -1 }))).toBe(VerifyCode.CLAIMS_INVALID);
    const noIat = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setIssuer(id).setExpirationTime("1m").sign(new TextEncoder().encode(secret));
    expect(await verify(noIat)).toBe(VerifyCode.CLAIMS_INVALID);
    // Expiring before it was issued: a negative lifetime is no lifetime, not a short one.
    expect(await verify(await sign(id, secret, { iat: now(), exp: now() - 1 }))).toBe(VerifyCode.CLAIMS_INVALID);
    expect(await verify(await sign(id, secret, { iat: now() + 5, exp: now() + 4 }))).toBe(VerifyCode.CLAIMS_INVALID);
  });

  it("refuses a jti holding control characters as a verdict, not an RPC error", async () => {
    const { id, secret } = await createSigningKey(`signer-jti-nul-${protocol}`);
    for (const jti of ["a\u0000b", "line\nbreak", "\u007f"]) {
      expect([jti, await verify(await sign(id, secret, { jti }))]).toEqual([jti, VerifyCode.CLAIMS_INVALID]);
    }
    expect(await verify(await sign(id, secret, { jti: "ünïcode-✓" }))).toBe(VerifyCode.VALID);
  });

  it("refuses a jti replayed within the lifetime", async () => {
    const { id, secret } = await createSigningKey(`signer-jti-${protocol}`);
    const once = await sign(id, secret, { jti: "req-1" });
    expect(await verify(once)).toBe(VerifyCode.VALID);
    expect(await verify(once)).toBe(VerifyCode.REPLAYED);
    expect(await verify(await sign(id, secret, { jti: "req-1", iat: now() - 1 }))).toBe(VerifyCode.REPLAYED);
    expect(await verify(await sign(id, secret, { jti: "req-2" }))).toBe(VerifyCode.VALID);
    // Without a jti a token may be reused until it expires.
    const reusable = await sign(id, secret);
    expect(await verify(reusable)).toBe(VerifyCode.VALID);
    expect(await verify(reusable)).toBe(VerifyCode.VALID);
  });

  it("refuses unknown issuers, opaque keys as issuers, disabled and deleted keys", async () => {
    const { id, secret } = await createSigningKey(`signer-state-${protocol}`);
    expect(await verify(await sign(id, secret, { iss: crypto.randomUUID() }))).toBe(VerifyCode.NOT_FOUND);
    expect(await verify(await sign(id, secret, { iss: "not-a-uuid" }))).toBe(VerifyCode.NOT_FOUND);
    const admin = clientsFor(t.baseUrl, protocol, t.adminToken).admin;
    const opaque = await admin.adminCreateApiKey({ name: `opaque-${protocol}`, policyId });
    expect(await verify(await sign(opaque.apiKey!.id, secret))).toBe(VerifyCode.NOT_FOUND);
    expect(await verify("eyJhbGciOiJIUzI1NiJ9.not-json.sig")).toBe(VerifyCode.NOT_FOUND);

    expect(await verify(await sign(id, secret))).toBe(VerifyCode.VALID);
    await admin.adminUpdateApiKey({ id, enabled: false });
    expect(await verify(await sign(id, secret))).toBe(VerifyCode.DISABLED);
    await admin.adminUpdateApiKey({ id, enabled: true });
    expect(await verify(await sign(id, secret))).toBe(VerifyCode.VALID);
    await admin.adminDeleteApiKey({ id });
    expect(await verify(await sign(id, secret))).toBe(VerifyCode.NOT_FOUND);
  });
});

describe.skipIf(!usingPostgres)("signed credentials across instances sharing Postgres", () => {
  it("refuses on one instance a jti first used on another, and honours a delete on both", async () => {
    const other = await startTestServer({
      DATABASE_URL: t.database.url!,
      APIKEYS_SECRET_KEY: "jwt-test-server-secret-0123456789abcdefghij",
      APIKEYS_JWT_MAX_LIFETIME_SECONDS: String(MAX_LIFETIME),
      APIKEYS_SHUTDOWN_GRACE_SECONDS: "0",
    });
    try {
      const here = clientsFor(t.baseUrl, "connect", t.adminToken).data;
      const there = clientsFor(other.baseUrl, "connect", t.adminToken).data;
      const { id, secret } = await createSigningKey("signer-shared");
      const token = await sign(id, secret, { jti: "shared-1" });
      expect((await here.verifyToken({ token })).code).toBe(VerifyCode.VALID);
      expect((await there.verifyToken({ token })).code).toBe(VerifyCode.REPLAYED);
      const fresh = () => sign(id, secret);
      expect((await there.verifyToken({ token: await fresh() })).code).toBe(VerifyCode.VALID);
      await clientsFor(t.baseUrl, "connect", t.adminToken).admin.adminDeleteApiKey({ id });
      await expect.poll(async () => (await there.verifyToken({ token: await fresh() })).code, { timeout: 2000 }).toBe(VerifyCode.NOT_FOUND);
    } finally {
      await other.stop();
    }
  });
});

describe("configuration and logs", () => {
  it("validates the signing settings", () => {
    const config = readConfig({});
    expect(config.signing.secretKey).toBeUndefined();
    expect(config.signing.jwtMaxLifetimeMs).toBe(300_000);
    expect(config.signing.jwtClockSkewMs).toBe(30_000);
    expect(() => readConfig({ APIKEYS_SECRET_KEY: "short" })).toThrow(ConfigError);
    expect(() => readConfig({ APIKEYS_JWT_MAX_LIFETIME_SECONDS: "0" })).toThrow(/APIKEYS_JWT_MAX_LIFETIME_SECONDS/);
    expect(() => readConfig({ APIKEYS_JWT_CLOCK_SKEW_SECONDS: "-1" })).toThrow(/APIKEYS_JWT_CLOCK_SKEW_SECONDS/);
  });

  it("never logs a signing secret or a signed credential, even at trace level", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "trace" }, { write: (line: string) => void lines.push(line) });
    const database = await createTestDatabase();
    const adminToken = generateToken("ak");
    const server = await startServer(
      readConfig({
        PORT: "0",
        HOST: "127.0.0.1",
        APIKEYS_DATA_DIR: "memory://",
        ...(database.url !== undefined && { DATABASE_URL: database.url }),
        APIKEYS_BOOTSTRAP_TOKEN: adminToken,
        APIKEYS_SECRET_KEY: "log-test-server-secret-0123456789abcdefghij",
        APIKEYS_SHUTDOWN_GRACE_SECONDS: "0",
      }),
      logger,
    );
    try {
      const { admin, data } = clientsFor(`http://127.0.0.1:${server.port}`, "connect", adminToken);
      const pid = (await admin.adminGetApiKeyPolicies({})).policies[0]!.id;
      const created = await admin.adminCreateApiKey({ name: "logged", policyId: pid, credentialType: CredentialType.SIGNING });
      const jwt = await sign(created.apiKey!.id, created.secret);
      expect((await data.verifyToken({ token: jwt })).code).toBe(VerifyCode.VALID);
      const asHolder = clientsFor(`http://127.0.0.1:${server.port}`, "connect", jwt).data;
      await asHolder.testApiKey({});
      expect(lines.length).toBeGreaterThan(3);
      const log = lines.join("\n");
      expect(log).not.toContain(created.secret);
      expect(log).not.toContain(jwt.split(".")[2]);
    } finally {
      await server.stop();
      await database.drop();
    }
  });
});
