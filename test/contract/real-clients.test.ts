import * as grpc from "@grpc/grpc-js";
import { type DescMessage, type MessageShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AdminCreateApiKeyPolicyRequestSchema,
  AdminCreateApiKeyPolicyResponseSchema,
  AdminGetApiKeyPoliciesRequestSchema,
  AdminGetApiKeyPoliciesResponseSchema,
} from "../../src/gen/apikeys/v1/admin_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { type Status, StatusSchema } from "../../src/gen/google/rpc/status_pb.js";
import { generateToken } from "../../src/tokens/token.js";
import { rejection } from "../helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "../helpers/server.js";

/*
 * Error details as clients we did not write read them: grpc-js gets
 * grpc-status-details-bin as a google.rpc.Status; connect-es clients get
 * ConnectError.findDetails; and the Connect GET and streaming codecs are as
 * strict as the unary one.
 */

const FAILURE_LIMIT = 2;
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ APIKEYS_AUTH_FAILURE_LIMIT: String(FAILURE_LIMIT) });
});
afterAll(() => t.stop());

/** One unary call with grpc-js, messages encoded by the generated schemas; resolves the ServiceError. */
function grpcJsError<I extends DescMessage, O extends DescMessage>(
  path: string,
  input: I,
  output: O,
  request: MessageShape<I>,
  headers: Record<string, string>,
): Promise<grpc.ServiceError> {
  const client = new grpc.Client(`127.0.0.1:${t.server.port}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  for (const [name, value] of Object.entries(headers)) metadata.set(name, value);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
      (b: Buffer) => fromBinary(output, b),
      request,
      metadata,
      (err) => {
        client.close();
        if (err) resolve(err);
        else reject(new Error("expected the call to fail"));
      },
    );
  });
}

function statusOf(err: grpc.ServiceError): Status {
  const [bin] = err.metadata.get("grpc-status-details-bin");
  expect(Buffer.isBuffer(bin)).toBe(true);
  return fromBinary(StatusSchema, bin as Buffer);
}

const CREATE_POLICY = "/apikeys.v1.ApiKeysAdminService/AdminCreateApiKeyPolicy";
const LIST_POLICIES = "/apikeys.v1.ApiKeysAdminService/AdminGetApiKeyPolicies";

describe("grpc-js", () => {
  it("reads the status, ErrorInfo and BadRequest of an invalid_argument verbatim", async () => {
    const err = await grpcJsError(
      CREATE_POLICY,
      AdminCreateApiKeyPolicyRequestSchema,
      AdminCreateApiKeyPolicyResponseSchema,
      create(AdminCreateApiKeyPolicyRequestSchema, { name: " padded " }),
      { authorization: `Bearer ${t.adminToken}` },
    );
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toBe("name must not start or end with spaces");
    const status = statusOf(err);
    expect(status).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: "name must not start or end with spaces" });
    const info = anyUnpack(status.details[0]!, ErrorInfoSchema);
    expect(info).toMatchObject({ reason: "INVALID_FIELD", domain: "apikeys", metadata: { field: "name" } });
    const badRequest = anyUnpack(status.details[1]!, BadRequestSchema);
    expect(badRequest?.fieldViolations).toEqual([
      expect.objectContaining({ field: "name", description: "name must not start or end with spaces", reason: "INVALID_FIELD" }),
    ]);
  });

  it("reads API_KEY_MISSING for a call without a key", async () => {
    const err = await grpcJsError(LIST_POLICIES, AdminGetApiKeyPoliciesRequestSchema, AdminGetApiKeyPoliciesResponseSchema, create(AdminGetApiKeyPoliciesRequestSchema), {});
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    const status = statusOf(err);
    expect(status.message).toBe("missing API key: send 'Authorization: Bearer <token>' or 'x-api-key: <token>'");
    expect(anyUnpack(status.details[0]!, ErrorInfoSchema)).toMatchObject({ reason: "API_KEY_MISSING", domain: "apikeys" });
  });
});

describe.each(PROTOCOLS)("connect-es client over %s", (protocol) => {
  it("finds ErrorInfo and BadRequest with ConnectError.findDetails", async () => {
    const { admin } = clientsFor(t.baseUrl, protocol, t.adminToken);
    const err = await rejection(admin.adminCreateApiKeyPolicy({ name: "" }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe("name is required");
    expect(err.findDetails(ErrorInfoSchema)).toEqual([expect.objectContaining({ reason: "INVALID_FIELD", domain: "apikeys", metadata: { field: "name" } })]);
    expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("name");
  });
});

describe("the other Connect codecs are as strict as unary POST", () => {
  it("Connect GET refuses an unknown field", async () => {
    const message = encodeURIComponent(JSON.stringify({ bogus: 1 }));
    const res = await fetch(`${t.baseUrl}/apikeys.v1.ApiKeysService/TestApiKey?connect=v1&encoding=json&message=${message}`, {
      headers: { authorization: `Bearer ${t.adminToken}` },
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string; details: Array<{ type: string; value: string }> };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/key "bogus" is unknown/);
    expect(fromBinary(ErrorInfoSchema, Buffer.from(body.details[0]!.value, "base64")).reason).toBe("UNKNOWN_FIELD");
  });

  it("Connect streaming refuses an unknown field in the request message", async () => {
    const data = Buffer.from(JSON.stringify({ bogus: 1 }));
    const frame = Buffer.alloc(5 + data.length);
    frame.writeUInt32BE(data.length, 1);
    data.copy(frame, 5);
    const res = await fetch(`${t.baseUrl}/apikeys.v1.ApiKeysService/WatchInvalidations`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/connect+json", "connect-protocol-version": "1" },
      body: frame,
    });
    const bytes = Buffer.from(await res.arrayBuffer());
    // The only frame is the end-stream message (flag 0x02) with the error.
    expect(bytes[0]).toBe(0x02);
    const end = JSON.parse(bytes.subarray(5, 5 + bytes.readUInt32BE(1)).toString()) as {
      error: { code: string; message: string; details: Array<{ type: string; value: string }> };
    };
    expect(end.error.code).toBe("invalid_argument");
    expect(end.error.message).toMatch(/key "bogus" is unknown/);
    expect(fromBinary(ErrorInfoSchema, Buffer.from(end.error.details[0]!.value, "base64")).reason).toBe("UNKNOWN_FIELD");
  });
});

// Last: once throttled, this address is refused whatever key it sends.
describe("grpc-js, failure throttle", () => {
  it("reads RetryInfo once the failure throttle holds the address", async () => {
    const call = () =>
      grpcJsError(LIST_POLICIES, AdminGetApiKeyPoliciesRequestSchema, AdminGetApiKeyPoliciesResponseSchema, create(AdminGetApiKeyPoliciesRequestSchema), {
        authorization: `Bearer ${generateToken("ak")}`,
      });
    // Refused until the limit is reached (a keyless call earlier may have counted too), then throttled.
    let err = await call();
    for (let i = 0; i < FAILURE_LIMIT && err.code === grpc.status.UNAUTHENTICATED; i++) err = await call();
    expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const status = statusOf(err);
    expect(anyUnpack(status.details[0]!, ErrorInfoSchema)?.reason).toBe("AUTH_THROTTLED");
    const retry = status.details.map((d) => anyUnpack(d, RetryInfoSchema)).find((d) => d !== undefined);
    expect(Number(retry?.retryDelay?.seconds)).toBeGreaterThan(0);
  });
});
