import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { AppContext } from "../context.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { abortError } from "../invalidation/invalidation-bus.js";
import { checkDatabase } from "./api-keys-service.js";

/** How often Watch re-checks the database while a stream is open. */
const WATCH_INTERVAL_MS = 5_000;

/**
 * grpc.health.v1.Health: every service this listener serves (and "", the server
 * as a whole) is SERVING exactly when the database answers.
 */
export function healthService(ctx: AppContext, served: readonly DescService[], watchIntervalMs = WATCH_INTERVAL_MS): ServiceImpl<typeof Health> {
  const names = new Set(["", ...served.map((s) => s.typeName)]);
  const overall = async () => ((await checkDatabase(ctx)).healthy ? Status.SERVING : Status.NOT_SERVING);

  return {
    async check(req) {
      if (!names.has(req.service)) throw new ConnectError(`unknown service "${req.service.slice(0, 200)}"`, Code.NotFound);
      return { status: await overall() };
    },

    async *watch(req, call) {
      let last: Status | undefined;
      while (!call.signal.aborted) {
        const status = names.has(req.service) ? await overall() : Status.SERVICE_UNKNOWN;
        if (status !== last) {
          last = status;
          yield { status };
        }
        await sleep(watchIntervalMs, call.signal);
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

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
