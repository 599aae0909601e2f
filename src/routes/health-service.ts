import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { peerAddress } from "../auth/auth-context.js";
import type { AppContext } from "../context.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { abortError } from "../streams/invalidation-bus.js";

/**
 * grpc.health.v1.Health: every service this listener serves (and "", the server
 * as a whole) is SERVING exactly when the database answers and the invalidation
 * listener is proven to deliver (else verdicts may be stale). Watch streams are
 * unauthenticated, so they share one poll of the database (`ctx.databaseHealth`)
 * and each address may hold only a few.
 */
export function healthService(ctx: AppContext, served: readonly DescService[]): ServiceImpl<typeof Health> {
  const names = new Set(["", ...served.map((s) => s.typeName)]);
  const overall = async () => ((await ctx.serving()) ? Status.SERVING : Status.NOT_SERVING);

  return {
    async check(req) {
      if (!names.has(req.service)) throw new ConnectError(`unknown service "${req.service.slice(0, 200)}"`, Code.NotFound);
      return { status: await overall() };
    },

    async *watch(req, call) {
      const release = ctx.streamCaps.acquire("Health/Watch", [
        { kind: "address", id: call.values.get(peerAddress), max: ctx.limits.maxHealthWatchStreamsPerAddress },
      ]);
      try {
        if (!names.has(req.service)) {
          // The spec: report SERVICE_UNKNOWN and keep the stream open (the service may appear later; ours never do).
          yield { status: Status.SERVICE_UNKNOWN };
          await new Promise((resolve) => (call.signal.aborted ? resolve(undefined) : call.signal.addEventListener("abort", resolve, { once: true })));
          return;
        }
        for await (const healthy of ctx.databaseHealth.changes(call.signal)) {
          yield { status: healthy ? Status.SERVING : Status.NOT_SERVING };
        }
      } finally {
        release();
      }
      // Ending normally would tell the client "OK" when its deadline passed.
      throw abortError(call.signal);
    },

    async list() {
      const status = await overall();
      return { statuses: Object.fromEntries([...names].filter((n) => n !== "").map((n) => [n, { status }])) };
    },
  };
}
