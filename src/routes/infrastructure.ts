import type { DescService } from "@bufbuild/protobuf";
import { type ConnectRouter, createConnectRouter } from "@connectrpc/connect";
import type { AppContext } from "../context.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import * as reflectionV1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as reflectionV1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { healthService } from "./health-service.js";
import { reflectionServices } from "./reflection-service.js";

/**
 * Adds gRPC health and reflection to `routes`, describing exactly the services
 * `routes` registers (returned as `served`). Both are public: they replace the
 * listener's interceptors, so the auth interceptor never sees them; health is not
 * logged either, since probes call it every few seconds.
 */
export function withInfrastructure(
  ctx: AppContext,
  routes: (router: ConnectRouter) => void,
): { routes: (router: ConnectRouter) => void; served: DescService[] } {
  const scratch = createConnectRouter();
  routes(scratch);
  const served = [...new Set(scratch.handlers.map((h) => h.service))];
  return {
    served,
    routes: (router) => {
      routes(router);
      const reflection = reflectionServices([...served, Health]);
      router.service(Health, healthService(ctx, served), { interceptors: [] });
      const logged = { interceptors: ctx.interceptors.logged };
      router.service(reflectionV1.ServerReflection, reflection.v1, logged);
      router.service(reflectionV1alpha.ServerReflection, reflection.v1alpha, logged);
    },
  };
}
