import type { ConnectRouter } from "@connectrpc/connect";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { peerContextValues } from "./auth/auth-context.js";
import { authInterceptor, failureThrottleInterceptor } from "./auth/auth-interceptor.js";
import { auditInterceptors } from "./audit/audit-interceptor.js";
import { SERVER_AUTHORITY } from "./auth/authority.js";
import { bootstrap, grantOwnPermissionsToAdminPolicy } from "./bootstrap.js";
import type { Config } from "./config.js";
import type { AppContext } from "./context.js";
import { connectNodeAdapterWithDecodeErrors } from "./decode-errors.js";
import { INVALIDATION_CHANNEL, type DatabaseHandle, openDatabase } from "./db/database.js";
import { migrateToLatest } from "./db/migrator.js";
import { ApiKeysAdminService } from "./gen/apikeys/v1/admin_pb.js";
import { ApiKeysService } from "./gen/apikeys/v1/api_keys_pb.js";
import { parseInvalidation } from "./invalidation/invalidation.js";
import { InvalidationBus } from "./invalidation/invalidation-bus.js";
import { type Listener, listen } from "./listener.js";
import { Metrics } from "./metrics.js";
import { checkAuthOptions, declaredPermissions } from "./permissions/declarations.js";
import { OWN_SERVICE, registerPermissions } from "./permissions/permission.service.js";
import { requestLogInterceptor } from "./request-log-interceptor.js";
import { adminService } from "./routes/admin-service.js";
import { apiKeysService, checkDatabase } from "./routes/api-keys-service.js";
import { HEALTH_WATCH_INTERVAL_MS } from "./routes/health-service.js";
import { probesHandler } from "./routes/http-probes.js";
import { withInfrastructure } from "./routes/infrastructure.js";
import { openApiHandler } from "./transcoding/openapi.js";
import { restHandler } from "./transcoding/rest-handler.js";
import { SharedStatus } from "./streams/shared-status.js";
import { StreamCaps } from "./streams/stream-caps.js";
import { Verifier } from "./verify/verifier.js";
import { RedisRateLimiter } from "./verify/redis-rate-limiter.js";
import { UsagePruner } from "./usage/usage-pruner.js";
import { SecretBox } from "./jwt/secret-box.js";
import { resolveSecretKey } from "./jwt/server-secret-key.js";
import { dashboardHandler } from "./web/static.js";

/** The services this server implements, in the order they are registered. */
export const SERVICES = [ApiKeysService, ApiKeysAdminService] as const;

/** Max request body: generous for admin payloads, far below what could hurt. */
const READ_MAX_BYTES = 1024 * 1024;

/**
 * A plain-HTTP handler for what is not an RPC (REST, static files, probes):
 * resolves true when it answered the request, false to pass it on.
 */
export type HttpHandler = (req: NodeRequest, res: NodeResponse) => boolean | Promise<boolean>;
type NodeHandler = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
type NodeRequest = Parameters<NodeHandler>[0];
type NodeResponse = Parameters<NodeHandler>[1];

function httpFallback(handlers: readonly HttpHandler[]) {
  return (req: NodeRequest, res: NodeResponse) => {
    void (async () => {
      for (const h of handlers) if (await h(req, res)) return;
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ code: 5, message: `no route for ${req.method} ${req.url?.split("?")[0]}`, details: [] }));
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ code: 13, message: "internal error", details: [] }));
    });
  };
}

type ListenHandler = Parameters<typeof listen>[0];

/** A port's handler that answers 503 until the service behind it is ready, then serves it. */
class DeferredHandler {
  private target: ListenHandler | undefined;

  readonly handle: ListenHandler = (req, res) => {
    if (this.target !== undefined) return this.target(req, res);
    const body = JSON.stringify({ code: 14, message: "apikeys is starting; retry shortly", details: [] });
    res.writeHead(503, { "content-type": "application/json", "retry-after": "1", "content-length": String(Buffer.byteLength(body)) });
    res.end(body);
  };

  serve(target: ListenHandler): void {
    this.target = target;
  }
}

/** A running apikeys server. */
export interface Server {
  ctx: AppContext;
  /** Port of the data plane (and the admin plane unless separate). */
  port: number;
  /** Port of the admin plane when ADMIN_PORT is set. */
  adminPort: number | undefined;
  /** The bootstrap token, when this start created a bootstrap key. */
  bootstrapToken: string | undefined;
  stop(): Promise<void>;
}

/** What a test (never the environment) may replace. */
export interface ServerHooks {
  /** The verifier's clock: expiry, credit refills, usage hours. */
  now?: () => number;
}

/** Opens the database, migrates, registers own permissions, bootstraps and listens. */
export async function startServer(configured: Config, logger: Logger, hooks: ServerHooks = {}): Promise<Server> {
  let config = configured;
  const problems = checkAuthOptions([...SERVICES]);
  if (problems.length > 0) throw new Error(`invalid auth options: ${problems.join("; ")}`);

  // Ports are bound before the database is touched: a start that cannot have its port (EADDRINUSE)
  // fails without opening, migrating or checkpointing anything. Until the service is ready they answer 503.
  const dataPlane = new DeferredHandler();
  const adminPlane = config.adminPort === undefined ? undefined : new DeferredHandler();
  const listeners: Listener[] = [await listen(dataPlane.handle, config.port, config.host, config.connectionLimits)];
  if (adminPlane !== undefined) {
    try {
      listeners.push(await listen(adminPlane.handle, config.adminPort!, config.adminHost, config.connectionLimits));
    } catch (err) {
      await listeners[0]!.close(0);
      throw err;
    }
  }
  let database: DatabaseHandle;
  try {
    database = await openDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      poolSize: config.databasePoolSize,
      statementTimeoutMs: config.statementTimeoutMs,
      logger,
      listenerPingIntervalMs: config.listenerPingIntervalMs,
    });
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close(0)));
    throw err;
  }
  let verifier: Verifier | undefined;
  let pruner: UsagePruner | undefined;
  try {
    const applied = await migrateToLatest(database.db);
    if (applied.length > 0) logger.info({ migrations: applied }, "database migrated");
    const secretKey = await resolveSecretKey(database.db, { configured: config.secretKey, databaseUrl: config.databaseUrl, dataDir: config.dataDir }, logger);
    config = { ...config, secretKey };

    const own = declaredPermissions([...SERVICES]).get(OWN_SERVICE) ?? [];
    await registerPermissions(database.db, SERVER_AUTHORITY, OWN_SERVICE, own);

    const tokens = { prefix: config.tokenPrefix, pepper: config.tokenPepper };
    const boot = await bootstrap(database.db, tokens, config.bootstrapToken);
    if (boot?.generated) {
      // Printed once, on the start that creates it; never logged again.
      process.stdout.write(
        `bootstrap admin key created; its token (shown once, create real admin keys then delete it): ${boot.token}\n`,
      );
    } else if (boot) {
      logger.info("bootstrap admin key created from APIKEYS_BOOTSTRAP_TOKEN");
    }
    const granted = await grantOwnPermissionsToAdminPolicy(database.db);
    if (granted.length > 0) logger.info({ permissions: granted }, "granted new apikeys permissions to the admin policy");

    const globalRateLimiter = config.redis && new RedisRateLimiter(config.redis, logger);
    // Limited keys fail closed until Redis answers: give it its connect timeout before serving, but start without it.
    if (globalRateLimiter !== undefined && !(await globalRateLimiter.connected(config.redis!.connectTimeoutMs))) {
      logger.warn("redis (rate limits) not reachable at start: keys with a rate limit fail with unavailable until it is");
    }
    const v = new Verifier(
      database.db,
      {
        tokens,
        cacheMaxEntries: config.cacheMaxEntries,
        cacheMaxBytes: config.cacheMaxBytes,
        cacheMaxAgeMs: config.cacheMaxAgeMs,
        prepared: database.prepared,
        authFailureLimit: config.authFailureLimit,
        authFailureWindowMs: config.authFailureWindowMs,
        outageStalenessMs: config.outageStalenessMs,
        signing: {
          secrets: config.secretKey === undefined ? undefined : new SecretBox(config.secretKey),
          maxLifetimeMs: config.jwtMaxLifetimeMs,
          clockSkewMs: config.jwtClockSkewMs,
        },
        globalRateLimiter,
        now: hooks.now,
      },
      logger,
    );
    pruner = new UsagePruner(database.db, config.usageRetentionMs, logger);
    verifier = v;
    const metrics = new Metrics({ verifier: v, poolStats: database.poolStats });
    const invalidations = new InvalidationBus();
    await database.listen(
      INVALIDATION_CHANNEL,
      (payload) => {
        metrics.observeInvalidation(payload);
        const event = parseInvalidation(payload);
        if (event) {
          v.invalidate(event);
          invalidations.publish(event);
        }
      },
      (listening, missedSince) => {
        v.setListening(listening, missedSince);
        invalidations.setListening(listening);
        logger.info({ listening }, "invalidation listener state");
      },
    );

    const ctx: AppContext = {
      config,
      db: database.db,
      databaseKind: database.kind,
      prepared: database.prepared,
      logger,
      verifier: v,
      invalidations,
      streamCaps: new StreamCaps(),
      // Serving means what Check says: the database answers and invalidations are proven to arrive.
      databaseHealth: new SharedStatus(async () => (await checkDatabase(ctx)).healthy && v.isListening, HEALTH_WATCH_INTERVAL_MS),
    };
    const auth = authInterceptor(v);
    const throttle = failureThrottleInterceptor(v);
    const interceptors = [requestLogInterceptor(logger), metrics.interceptor(), throttle, auth];
    // Only the admin plane is audited. The audit log brackets auth: its outer half also records
    // calls auth refuses, its inner half knows the actor. Calls from a peer the throttle blocks are
    // refused before it, so failing authentication cannot fill the log. Service options replace the listener's list.
    const audit = auditInterceptors(database.db, logger, config.auditRequestMaxBytes);
    const adminInterceptors = [requestLogInterceptor(logger), metrics.interceptor(), throttle, audit.outer, auth, audit.inner];
    // Plain-HTTP handlers tried in order for requests that are not RPCs.
    const httpHandlers: HttpHandler[] = [];
    const probes = probesHandler(ctx);
    const handler = (appRoutes: (router: ConnectRouter) => void, extra: HttpHandler[] = []) => {
      const { routes, served } = withInfrastructure(ctx, appRoutes);
      // REST routes and OpenAPI of exactly the services this listener serves, through the same interceptors.
      const rest = restHandler({ routes, interceptors, readMaxBytes: READ_MAX_BYTES, contextValues: peerContextValues });
      return connectNodeAdapterWithDecodeErrors({
        routes,
        interceptors,
        readMaxBytes: READ_MAX_BYTES,
        // JSON answers carry every field, as REST's do: `"valid": false` is a verdict, not an absence.
        jsonOptions: { alwaysEmitImplicit: true },
        // Keys restricted to CIDRs are checked against the caller's own address.
        contextValues: peerContextValues,
        fallback: httpFallback([probes, openApiHandler(served), rest, ...httpHandlers, ...extra]),
      });
    };
    // The dashboard calls the admin RPCs on its own origin, so it lives with the admin plane.
    const dashboard = dashboardHandler();
    // Metrics are served with the admin plane, which operators keep internal.
    const metricsHandler = metrics.httpHandler();
    const data = (router: ConnectRouter) => router.service(ApiKeysService, apiKeysService(ctx));
    const admin = (router: ConnectRouter) =>
      router.service(ApiKeysAdminService, adminService(ctx), { interceptors: adminInterceptors });

    if (adminPlane === undefined) {
      dataPlane.serve(handler((r) => (data(r), admin(r)), [metricsHandler, dashboard]));
    } else {
      dataPlane.serve(handler(data));
      adminPlane.serve(handler(admin, [metricsHandler, dashboard]));
    }
    logger.info(
      { port: listeners[0]!.port, admin_port: listeners[1]?.port, database: database.kind, rate_limits: config.redis ? "redis" : "local" },
      "apikeys listening",
    );

    let stopping: Promise<void> | undefined;
    return {
      ctx,
      port: listeners[0]!.port,
      adminPort: listeners[1]?.port,
      bootstrapToken: boot?.token,
      stop() {
        stopping ??= (async () => {
          // Open streams would otherwise hold the grace period; their clients reconnect elsewhere.
          invalidations.close();
          await Promise.all(listeners.map((l) => l.close(config.shutdownGraceMs)));
          pruner!.close();
          await v.close();
          await database.close();
        })();
        return stopping;
      },
    };
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close(0)));
    pruner?.close();
    await verifier?.close();
    await database.close();
    throw err;
  }
}
