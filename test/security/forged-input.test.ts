import { create } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditStage } from "../../src/gen/apikeys/v1/audit_pb.js";
import { generateToken } from "../../src/tokens/token.js";
import { rejection } from "../helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "../helpers/server.js";

/* Forged page tokens, out-of-range times and NUL characters: refused cleanly and still audited. */

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
  // A second key, so that listing one key a page yields a next-page token.
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const { policies } = await admin.adminGetApiKeyPolicies({});
  await admin.adminCreateApiKey({ name: "second", policyId: policies[0]!.id });
});
afterAll(() => t.stop());

const b64 = (text: string) => Buffer.from(text).toString("base64url");
/** Seconds since the epoch of 0001-01-01T00:00:00Z, the earliest time a Timestamp may hold. */
const YEAR_1 = -62_135_596_800n;

describe.each(PROTOCOLS)("forged page tokens and times over %s", (protocol) => {
  const admin = () => clientsFor(t.baseUrl, protocol, t.adminToken).admin;

  it("refuses key page tokens whose position is out of range or not a time with invalid_argument", async () => {
    // A real token (page 1 of 1-key pages), then the same token with its position forged.
    const { nextPageToken } = await admin().adminGetApiKeys({ pageSize: 1 });
    const [digest, , id] = JSON.parse(Buffer.from(nextPageToken, "base64url").toString("utf8")) as [string, string, string];
    for (const position of ["9".repeat(19), "-" + "9".repeat(18), "2026-12-01T00:00:00Z", "1e30"]) {
      const err = await rejection(admin().adminGetApiKeys({ pageSize: 1, pageToken: b64(JSON.stringify([digest, position, id])) }));
      expect([position, err.code]).toEqual([position, Code.InvalidArgument]);
      expect(err.rawMessage).toMatch(/^page_token is not one this service issued/);
    }
    // The token as issued still works.
    await admin().adminGetApiKeys({ pageSize: 1, pageToken: nextPageToken });
  });

  it("refuses audit page tokens beyond the id range with invalid_argument", async () => {
    for (const id of ["9999999999999999999", "9223372036854775808", "0", "-1", "1e3"]) {
      const err = await rejection(admin().adminGetAuditEvents({ pageToken: b64(id) }));
      expect([id, err.code, err.rawMessage]).toEqual([id, Code.InvalidArgument, "page_token is not one this service issued"]);
    }
    await admin().adminGetAuditEvents({ pageToken: b64("9223372036854775807") });
  });

  it("refuses consumer page tokens that no username can be", async () => {
    for (const name of ["a\u0000b", "x".repeat(300)]) {
      const err = await rejection(admin().adminGetConsumers({ pageToken: b64(name) }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toMatch(/^page_token is not one this service issued/);
    }
  });

  it("refuses audit time filters outside years 1–9999 with invalid_argument naming the field", async () => {
    const before1 = create(TimestampSchema, { seconds: YEAR_1 - 1n });
    const far = create(TimestampSchema, { seconds: 253_402_300_800n * 30n });
    const cases = [
      [{ startTime: before1 }, "start_time"],
      [{ endTime: before1 }, "end_time"],
      [{ startTime: far }, "start_time"],
    ] as const;
    for (const [filter, field] of cases) {
      const err = await rejection(admin().adminGetAuditEvents(filter));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toBe(`${field} must be a time between the years 1 and 9999`);
    }
    await admin().adminGetAuditEvents({ startTime: create(TimestampSchema, { seconds: YEAR_1 }) });
  });
});

it("audits a refused call whose strings hold NUL, storing them sanitized", async () => {
  const { admin } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const name = `nul-audited\u0000${crypto.randomUUID()}`;
  expect((await rejection(admin.adminCreateApiKeyPolicy({ name, permissions: [] }))).code).toBe(Code.InvalidArgument);
  // The same from a caller authentication refuses: a refusal is recorded whatever the request holds.
  const stranger = clientsFor(t.baseUrl, "connect", generateToken("ak")).admin;
  expect((await rejection(stranger.adminCreateApiKeyPolicy({ name: `${name}-unauthenticated`, permissions: [] }))).code).toBe(
    Code.Unauthenticated,
  );
  const events = (await admin.adminGetAuditEvents({ pageSize: 50 })).events.filter((e) =>
    String(e.request?.name ?? "").startsWith("nul-audited\uFFFD"),
  );
  const stages = events.map((e) => [e.request?.name, e.stage, e.code]);
  const stored = name.replace("\u0000", "\uFFFD");
  expect(stages).toEqual([
    [`${stored}-unauthenticated`, AuditStage.FAILURE, "unauthenticated"],
    [`${stored}-unauthenticated`, AuditStage.ATTEMPT, ""],
    [stored, AuditStage.FAILURE, "invalid_argument"],
    [stored, AuditStage.ATTEMPT, ""],
  ]);
});
