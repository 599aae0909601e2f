import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { VerifyCode } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { generateToken } from "../../src/tokens/token.js";
import { codeOf, rejection } from "../helpers/errors.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/* Failed authentications per client address: 5 per 2-second window here, so a test can outlast one. */

const LIMIT = 5;
const WINDOW_MS = 2_000;
let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ APIKEYS_AUTH_FAILURE_LIMIT: String(LIMIT), APIKEYS_AUTH_FAILURE_WINDOW_SECONDS: "2" });
});
afterAll(() => t.stop());

const waitForWindow = () => new Promise((r) => setTimeout(r, WINDOW_MS + 200));

it("blocks an address after the limit of bad tokens, then every token it sends, until the window ends", async () => {
  // A call without any key is no guess and is not counted.
  for (let i = 0; i < LIMIT * 2; i++) expect(await codeOf(clientsFor(t.baseUrl, "connect").data.testApiKey({}))).toBe(Code.Unauthenticated);
  expect(await codeOf(clientsFor(t.baseUrl, "connect", t.adminToken).data.testApiKey({}))).toBe("ok");

  const guesses = ["garbage", generateToken("ak"), generateToken("ak"), "Basic-not-bearer", generateToken("ak")];
  for (const [i, token] of guesses.entries()) {
    const headers = i === 3 ? { authorization: `Basic ${token}` } : { "x-api-key": token };
    expect(await codeOf(clientsFor(t.baseUrl, i % 2 === 0 ? "grpc" : "connect").data.testApiKey({}, { headers }))).toBe(Code.Unauthenticated);
  }
  const blocked = await rejection(clientsFor(t.baseUrl, "grpc-web", generateToken("ak")).data.testApiKey({}));
  expect(blocked.code).toBe(Code.ResourceExhausted);
  expect(blocked.rawMessage).toMatch(/too many failed authentication attempts from this address; retry in [12]s/);
  // A valid key from a blocked address is refused too, so the block is no oracle.
  expect(await codeOf(clientsFor(t.baseUrl, "connect", t.adminToken).admin.adminGetApiKeys({}))).toBe(Code.ResourceExhausted);
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

it("throttles VerifyToken by the client_ip it is asked about, independently per address", async () => {
  await waitForWindow();
  const { data } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const guesser = "203.0.113.7";
  for (let i = 0; i < LIMIT; i++) {
    expect((await data.verifyToken({ token: generateToken("ak"), clientIp: guesser })).code).toBe(VerifyCode.NOT_FOUND);
  }
  const blocked = await data.verifyToken({ token: t.adminToken, clientIp: guesser });
  expect(blocked).toMatchObject({ valid: false, code: VerifyCode.RATE_LIMITED });
  expect(blocked.apiKey).toBeUndefined();
  expect((await data.verifyToken({ token: t.adminToken, clientIp: "203.0.113.8" })).valid).toBe(true);
  // Without a client_ip the caller is a service vouching for nobody in particular: never throttled.
  for (let i = 0; i < LIMIT * 2; i++) expect((await data.verifyToken({ token: generateToken("ak") })).code).toBe(VerifyCode.NOT_FOUND);
  expect((await data.verifyToken({ token: t.adminToken })).valid).toBe(true);

  await waitForWindow();
  expect((await data.verifyToken({ token: t.adminToken, clientIp: guesser })).valid).toBe(true);
});
