// Profiles the SDK's cached KeyVerifier.verify in a tight loop on one core:
// `taskset -c 0 node [--cpu-prof --cpu-prof-dir=DIR] --import tsx bench/profile-sdk.ts`.
// Its client is a stand-in answering one valid VerifyTokenResponse (asked once; every later call is a
// cache hit), so what is measured is the SDK alone; `npm run bench` measures the same against a real
// server. Prints, per round of N calls (default 2,000,000), the rate and the CPU time per call. Not part of the service.
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { type ApiKeysService, VerifyTokenResponseSchema } from "../packages/client/src/gen/apikeys/v1/api_keys_pb.js";
import { ApiKeySchema } from "../packages/client/src/gen/apikeys/v1/resources_pb.js";
import { KeyVerifier } from "../packages/client/src/key-verifier.js";
import { generateToken } from "../packages/client/src/token-format.js";

const response = create(VerifyTokenResponseSchema, {
  valid: true,
  apiKey: create(ApiKeySchema, { id: "key-1", name: "profiled", policy: { id: "policy-1", name: "profiled" } }),
  permissions: ["bench:read"],
});
const client = { verifyToken: async () => response } as unknown as Client<typeof ApiKeysService>;
// No invalidation stream here, so verdicts live the disconnected TTL: long enough for every round.
const verifier = new KeyVerifier({ client, watch: false, disconnectedTtlMs: 3_600_000 });
const token = generateToken("ak");
const calls = Number(process.env.N ?? 2_000_000);
for (let i = 0; i < 200_000; i++) await verifier.verify(token);
for (let round = 0; round < 5; round++) {
  const cpu = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < calls; i++) await verifier.verify(token);
  const seconds = (performance.now() - start) / 1e3;
  const used = process.cpuUsage(cpu);
  console.log(`${(calls / seconds / 1000).toFixed(0)}k/s, ${(((used.user + used.system) / calls) * 1000).toFixed(0)} ns CPU per call, ${verifier.remoteCalls} remote call(s)`);
}
