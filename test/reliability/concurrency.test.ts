import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { VerifyCode } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { codeOf } from "../helpers/errors.js";
import { clientsFor, PROTOCOLS, startTestServer, type TestServer } from "../helpers/server.js";

/* Races on one real server, spread over every protocol so they arrive on many connections. */

const N = 50;
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ DATABASE_POOL_SIZE: "10" });
});
afterAll(() => t.stop());

const admins = () => PROTOCOLS.map((p) => clientsFor(t.baseUrl, p, t.adminToken).admin);

function tally(codes: Array<Code | "ok">): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of codes) out[c === "ok" ? "ok" : Code[c]] = (out[c === "ok" ? "ok" : Code[c]] ?? 0) + 1;
  return out;
}

it(`lets exactly one of ${N} concurrent creates of the same policy name succeed`, async () => {
  const clients = admins();
  const codes = await Promise.all(
    Array.from({ length: N }, (_, i) => codeOf(clients[i % clients.length]!.adminCreateApiKeyPolicy({ name: "contended-policy", permissions: [] }))),
  );
  expect(tally(codes)).toEqual({ ok: 1, AlreadyExists: N - 1 });
  const policies = (await clients[0]!.adminGetApiKeyPolicies({})).policies.filter((p) => p.name === "contended-policy");
  expect(policies).toHaveLength(1);
});

it(`lets exactly one of ${N} concurrent creates of the same key name succeed, and only its token works`, async () => {
  const clients = admins();
  const policyId = (await clients[0]!.adminCreateApiKeyPolicy({ name: "for-contended-key", permissions: [] })).policy!.id;
  const results = await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      try {
        return { code: "ok" as const, token: (await clients[i % clients.length]!.adminCreateApiKey({ name: "contended-key", policyId })).token };
      } catch (err) {
        return { code: await codeOf(Promise.reject(err)), token: undefined };
      }
    }),
  );
  expect(tally(results.map((r) => r.code))).toEqual({ ok: 1, AlreadyExists: N - 1 });
  const keys = (await clients[0]!.adminGetApiKeys({ policyId })).apiKeys;
  expect(keys.map((k) => k.name)).toEqual(["contended-key"]);
  const { data } = clientsFor(t.baseUrl, "connect", t.adminToken);
  expect((await data.verifyToken({ token: results.find((r) => r.token)!.token! })).valid).toBe(true);
});

it("never leaves a key whose policy is gone when a policy delete races key creation", async () => {
  const clients = admins();
  for (let round = 0; round < 5; round++) {
    const policyId = (await clients[0]!.adminCreateApiKeyPolicy({ name: `doomed-${round}`, permissions: [] })).policy!.id;
    const creates = Array.from({ length: 20 }, (_, i) =>
      clients[i % clients.length]!.adminCreateApiKey({ name: `orphan-${round}-${i}`, policyId }).then(
        (r) => ({ ok: true as const, id: r.apiKey!.id, token: r.token }),
        (err: unknown) => ({ ok: false as const, err }),
      ),
    );
    // Let some creates land first, so the delete has keys to cascade as well as racers to beat.
    await new Promise((r) => setTimeout(r, round * 5));
    const deleted = clients[round % clients.length]!.adminDeleteApiKeyPolicy({ id: policyId });
    const [created, deletion] = await Promise.all([Promise.all(creates), deleted]);

    for (const c of created) {
      if (!c.ok) expect([Code.NotFound, Code.FailedPrecondition]).toContain(await codeOf(Promise.reject(c.err)));
    }
    const survivors = created.filter((c) => c.ok);
    // Every create that committed answered ok (it reads its key back in its own transaction)
    // and was cascaded with the policy; every other create was refused.
    expect(deletion.apiKeysDeleted).toBe(survivors.length);
    const { data } = clientsFor(t.baseUrl, "connect", t.adminToken);
    for (const s of survivors) {
      expect(await codeOf(clients[0]!.adminGetApiKey({ id: s.id }))).toBe(Code.NotFound);
      expect((await data.verifyToken({ token: s.token })).code).toBe(VerifyCode.NOT_FOUND);
    }
    expect((await clients[0]!.adminGetApiKeys({ policyId })).apiKeys).toEqual([]);
  }
});

it(`settles ${N / 5} parallel rotations on one winner: the last to commit, whose token alone works`, async () => {
  const clients = admins();
  const policyId = (await clients[0]!.adminCreateApiKeyPolicy({ name: "rotated", permissions: [] })).policy!.id;
  const created = await clients[0]!.adminCreateApiKey({ name: "rotated", policyId });
  const rotations = await Promise.all(
    Array.from({ length: N / 5 }, (_, i) => clients[i % clients.length]!.adminRotateApiKey({ id: created.apiKey!.id })),
  );
  const tokens = new Set(rotations.map((r) => r.token));
  expect(tokens.size).toBe(N / 5);
  const { data } = clientsFor(t.baseUrl, "connect", t.adminToken);
  const verdicts = await Promise.all(rotations.map((r) => data.verifyToken({ token: r.token })));
  const winners = rotations.filter((_, i) => verdicts[i]!.valid);
  expect(winners).toHaveLength(1);
  expect((await data.verifyToken({ token: created.token })).code).toBe(VerifyCode.NOT_FOUND);
  // The stored display start is the winner's: the key's row and its token agree.
  const stored = (await clients[0]!.adminGetApiKey({ id: created.apiKey!.id })).apiKey!;
  expect(winners[0]!.token.startsWith(stored.start)).toBe(true);
});
