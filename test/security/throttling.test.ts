import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { SignJWT } from "jose";
import { VerifyCode } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { CredentialType } from "../../src/gen/apikeys/v1/resources_pb.js";
import { generateToken } from "../../src/tokens/token.js";
import { codeOf, rejection } from "../helpers/errors.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/* Failed authentications per client address: 5 per 2-second window here, so a test can outlast one. */

const LIMIT = 5;
const WINDOW_MS = 2_000;
let t: TestServer;
let verifierPolicyId: string;

beforeAll(async () => {
  t = await startTestServer({
    APIKEYS_AUTH_FAILURE_LIMIT: String(LIMIT),
    APIKEYS_AUTH_FAILURE_WINDOW_SECONDS: "2",
    APIKEYS_SECRET_KEY: "throttling-test-server-secret-0123456789",
  });
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  verifierPolicyId = (await admin.adminCreateApiKeyPolicy({ name: "verifier", permissions: ["apikeys:verify"] })).policy!.id;
});
afterAll(() => t.stop());

const waitForWindow = () => new Promise((r) => setTimeout(r, WINDOW_MS + 200));

it("blocks an address after the limit of failed authentications, then every call it makes, until the window ends", async () => {
  const guesses = ["garbage", generateToken("ak"), undefined, "Basic-not-bearer", generateToken("ak")];
  for (const [i, token] of guesses.entries()) {
    // A call without any key counts too: it is as refused as a wrong one, and as able to fill the audit log.
    const headers: Record<string, string> =
      token === undefined ? {} : i === 3 ? { authorization: `Basic ${token}` } : { "x-api-key": token };
    expect(await codeOf(clientsFor(t.baseUrl, i % 2 === 0 ? "grpc" : "connect").data.testApiKey({}, { headers }))).toBe(Code.Unauthenticated);
  }
  const blocked = await rejection(clientsFor(t.baseUrl, "grpc-web", generateToken("ak")).data.testApiKey({}));
  expect(blocked.code).toBe(Code.ResourceExhausted);
  expect(blocked.rawMessage).toMatch(/too many failed authentication attempts from this address; retry in [12]s/);
  // A valid key from a blocked address is refused too, so the block is no oracle.
  expect(await codeOf(clientsFor(t.baseUrl, "connect", t.adminToken).admin.adminGetApiKeys({}))).toBe(Code.ResourceExhausted);
  expect(await codeOf(clientsFor(t.baseUrl, "connect").data.testApiKey({}))).toBe(Code.ResourceExhausted);
  const rest = await fetch(`${t.baseUrl}/api/v1/api_keys/test`, { headers: { authorization: `Bearer ${t.adminToken}` } });
  expect(rest.status).toBe(429);
  expect(rest.headers.get("retry-after")).toMatch(/^[12]$/);
  await rest.arrayBuffer();
  const connect = await fetch(`${t.baseUrl}/apikeys.v1.ApiKeysService/TestApiKey`, {
    method: "POST",
    headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/json" },
    body: "{}",
  });
  expect(connect.status).toBe(429);
  expect(connect.headers.get("retry-after")).toMatch(/^[12]$/);
  await connect.arrayBuffer();
  // Public methods stay open.
  expect((await clientsFor(t.baseUrl, "connect").data.getServiceHealth({})).healthy).toBe(true);

  await waitForWindow();
  expect(await codeOf(clientsFor(t.baseUrl, "connect", t.adminToken).admin.adminGetApiKeys({}))).toBe("ok");
});

it("counts JWTs whose signature does not verify as failed authentications", async () => {
  await waitForWindow();
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const signer = await admin.adminCreateApiKey({ name: "throttle-signer", policyId: verifierPolicyId, credentialType: CredentialType.SIGNING });
  const forged = await new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer(signer.apiKey!.id)
    .setIssuedAt()
    .setExpirationTime("1m")
    .sign(new TextEncoder().encode("not-the-secret-of-this-key-at-all"));
  for (let i = 0; i < LIMIT; i++) {
    expect(await codeOf(clientsFor(t.baseUrl, "connect", forged).data.testApiKey({}))).toBe(Code.Unauthenticated);
  }
  expect(await codeOf(clientsFor(t.baseUrl, "connect", t.adminToken).data.testApiKey({}))).toBe(Code.ResourceExhausted);
});

it("throttles VerifyToken per calling key and client_ip, and its refusals of other tokens lock nobody out", async () => {
  await waitForWindow();
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const verifierToken = (await admin.adminCreateApiKey({ name: "throttle-verifier", policyId: verifierPolicyId })).token;
  const otherVerifierToken = (await admin.adminCreateApiKey({ name: "throttle-verifier-2", policyId: verifierPolicyId })).token;
  const data = clientsFor(t.baseUrl, "connect", verifierToken).data;
  const guesser = "203.0.113.7";
  for (let i = 0; i < LIMIT; i++) {
    expect((await data.verifyToken({ token: generateToken("ak"), clientIp: guesser })).code).toBe(VerifyCode.NOT_FOUND);
  }
  const blocked = await data.verifyToken({ token: t.adminToken, clientIp: guesser });
  expect(blocked).toMatchObject({ valid: false, code: VerifyCode.RATE_LIMITED });
  expect(blocked.apiKey).toBeUndefined();
  // Only this caller's answers for that address are blocked.
  expect((await data.verifyToken({ token: t.adminToken, clientIp: "203.0.113.8" })).valid).toBe(true);
  const other = clientsFor(t.baseUrl, "connect", otherVerifierToken).data;
  expect((await other.verifyToken({ token: t.adminToken, clientIp: guesser })).valid).toBe(true);
  // Without a client_ip the caller is a service vouching for nobody in particular: never throttled.
  for (let i = 0; i < LIMIT * 2; i++) expect((await data.verifyToken({ token: generateToken("ak") })).code).toBe(VerifyCode.NOT_FOUND);
  expect((await data.verifyToken({ token: t.adminToken })).valid).toBe(true);

  // Naming the address every caller here connects from blocks no one's own calls: peers are throttled apart.
  for (let i = 0; i < LIMIT * 3; i++) await data.verifyToken({ token: generateToken("ak"), clientIp: "127.0.0.1" });
  expect(await codeOf(clientsFor(t.baseUrl, "connect", t.adminToken).admin.adminGetApiKeys({}))).toBe("ok");
  expect((await other.verifyToken({ token: t.adminToken, clientIp: "127.0.0.1" })).valid).toBe(true);

  await waitForWindow();
  expect((await data.verifyToken({ token: t.adminToken, clientIp: guesser })).valid).toBe(true);
});
