import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApiKeysClients, retryIdempotent } from "@apikeys/client";
import { ApiKeysAdminService } from "../src/gen/apikeys/v1/admin_pb.js";
import { ApiKeysService, VerifyCode } from "../src/gen/apikeys/v1/api_keys_pb.js";

/** A real ApiKeysService stand-in whose handlers fail on purpose, served over a real socket. */
let server: http.Server;
let baseUrl: string;
const calls = { verifyToken: 0, createKey: 0, slow: 0 };
let seenAuthorization: string | null = null;

beforeAll(async () => {
  server = http.createServer(
    connectNodeAdapter({
      routes: (router) => {
        router.service(ApiKeysService, {
          async verifyToken(req, ctx) {
            seenAuthorization = ctx.requestHeader.get("authorization");
            if (req.token === "slow") {
              calls.slow++;
              await new Promise((r) => setTimeout(r, 1_000));
            }
            // Unavailable twice, then an answer: a retry must get through.
            if (++calls.verifyToken % 3 !== 0) throw new ConnectError("try again", Code.Unavailable);
            return { valid: false, code: VerifyCode.NOT_FOUND };
          },
        });
        router.service(ApiKeysAdminService, {
          async adminCreateApiKey() {
            calls.createKey++;
            throw new ConnectError("try again", Code.Unavailable);
          },
        });
      },
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe("SDK clients", () => {
  it("retries a side-effect-free call that found the server unavailable, sending the service's key", async () => {
    calls.verifyToken = 0;
    const { apiKeys } = createApiKeysClients({ baseUrl, token: "ak_service", httpVersion: "1.1" });
    const res = await apiKeys.verifyToken({ token: "x" });
    expect(res.code).toBe(VerifyCode.NOT_FOUND);
    expect(calls.verifyToken).toBe(3);
    expect(seenAuthorization).toBe("Bearer ak_service");
  });

  it("gives up after maxAttempts", async () => {
    calls.verifyToken = 0;
    const { apiKeys } = createApiKeysClients({ baseUrl, token: "t", httpVersion: "1.1", maxAttempts: 2 });
    await expect(apiKeys.verifyToken({ token: "x" })).rejects.toMatchObject({ code: Code.Unavailable });
    expect(calls.verifyToken).toBe(2);
  });

  it("never retries a method that is not declared idempotent", async () => {
    calls.createKey = 0;
    const { admin } = createApiKeysClients({ baseUrl, token: "t", httpVersion: "1.1" });
    await expect(admin.adminCreateApiKey({ name: "x" })).rejects.toMatchObject({ code: Code.Unavailable });
    expect(calls.createKey).toBe(1);
  });

  it("puts a deadline on unary calls, retries included", async () => {
    calls.slow = 0;
    const { apiKeys } = createApiKeysClients({ baseUrl, token: "t", httpVersion: "1.1", timeoutMs: 300 });
    const started = Date.now();
    await expect(apiKeys.verifyToken({ token: "slow" })).rejects.toMatchObject({ code: Code.DeadlineExceeded });
    expect(Date.now() - started).toBeLessThan(900);
    expect(calls.slow).toBe(1);
  });

  it("retryIdempotent leaves other errors alone", async () => {
    let attempts = 0;
    const transport = createRouterTransport(
      (router) =>
        router.service(ApiKeysService, {
          verifyToken() {
            attempts++;
            throw new ConnectError("bad", Code.InvalidArgument);
          },
        }),
      { transport: { interceptors: [retryIdempotent(5)] } },
    );
    await expect(createClient(ApiKeysService, transport).verifyToken({})).rejects.toMatchObject({ code: Code.InvalidArgument });
    expect(attempts).toBe(1);
  });
});
