import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { AppContext } from "../context.js";
import { ApiKeysAdminService } from "../gen/apikeys/v1/admin_pb.js";
import { ApiKeysService } from "../gen/apikeys/v1/api_keys_pb.js";
import { connectAdapter } from "../http/connect-adapter.js";
import { dashboardHandler } from "../http/dashboard.js";
import { type FastPathOptions, fastPath } from "../http/fast-path/fast-path.js";
import { type HttpHandler, type RequestHandler, httpFallback } from "../http/handler.js";
import { metricsEndpoint } from "../http/metrics-endpoint.js";
import { probesHandler } from "../http/probes.js";
import { toConnectError } from "../interceptors/errors.js";
import { openApiHandler } from "../transcoding/openapi.js";
import { restHandler } from "../transcoding/rest-handler.js";
import { adminService } from "./admin-service.js";
import { apiKeysService } from "./api-keys-service.js";
import { withInfrastructure } from "./infrastructure.js";

/** The services this server implements, in the order they are registered. */
export const SERVICES = [ApiKeysService, ApiKeysAdminService] as const;

/** Max request body: generous for admin payloads, far below what could hurt. */
const READ_MAX_BYTES = 1024 * 1024;

/** The data plane's routes: VerifyToken and the other calls services make. */
export function dataRoutes(ctx: AppContext) {
  return (router: ConnectRouter) => router.service(ApiKeysService, apiKeysService(ctx));
}

/** The admin plane's routes, with the admin interceptors (the audit log). Service options replace the listener's list. */
export function adminRoutes(ctx: AppContext) {
  return (router: ConnectRouter) => router.service(ApiKeysAdminService, adminService(ctx), { interceptors: ctx.interceptors.admin });
}

/** What only the admin plane serves besides its RPCs: metrics (operators keep it internal) and the dashboard (it calls the admin RPCs on its own origin). */
export function adminExtras(ctx: AppContext): HttpHandler[] {
  return [metricsEndpoint(ctx.metrics.registry), dashboardHandler()];
}

/**
 * One listener's handler for `appRoutes`: Connect, gRPC and gRPC-Web through the
 * interceptors, then plain HTTP tried in order — probes, OpenAPI and REST routes
 * of exactly these services (through the same interceptors), then `extra`.
 */
export function planeHandler(ctx: AppContext, appRoutes: (router: ConnectRouter) => void, extra: HttpHandler[] = []): RequestHandler {
  // The fast path serves ApiKeysService with the very implementation and interceptors the router registers.
  let registered: FastPathOptions | undefined;
  const { routes, served } = withInfrastructure(ctx, (router) =>
    appRoutes({
      handlers: router.handlers,
      rpc: router.rpc.bind(router),
      service(service, impl, options) {
        // Only a service that runs exactly the data plane's steps: the fast path runs those steps itself.
        const interceptors = options?.interceptors ?? ctx.interceptors.data;
        if ((service as DescService) === ApiKeysService && interceptors === ctx.dataPlane.interceptors) {
          registered = {
            service,
            impl: impl as FastPathOptions["impl"],
            dataPlane: ctx.dataPlane,
            contextValues: ctx.contextValues,
            observe: (outcome) => ctx.metrics.observeFastPath(outcome),
          };
        }
        return router.service(service, impl, options);
      },
    } as ConnectRouter),
  );
  const common = {
    routes,
    interceptors: ctx.interceptors.data,
    readMaxBytes: READ_MAX_BYTES,
    // Keys restricted to CIDRs are checked against the caller's own address.
    contextValues: ctx.contextValues,
    // Errors the protocol raises before any interceptor (a body that does not decode) get the same mapping.
    errorHook: toConnectError,
  };
  const rest = restHandler(common);
  return connectAdapter(
    {
      ...common,
      // JSON answers carry every field, as REST's do: `"valid": false` is a verdict, not an absence.
      jsonOptions: { alwaysEmitImplicit: true },
      fallback: httpFallback([probesHandler(ctx), openApiHandler(served), rest, ...extra]),
    },
    (resolved) => (ctx.limits.fastPath && registered !== undefined ? fastPath(registered, resolved) : undefined),
  );
}
