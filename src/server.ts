import type { Logger } from "pino";
import { SERVER_AUTHORITY } from "./auth/authority.js";
import { bootstrap, grantOwnPermissionsToAdminPolicy } from "./bootstrap.js";
import type { Config } from "./config.js";
import { type AppContext, type ServerHooks, createAppContext } from "./context.js";
import { INVALIDATION_CHANNEL, type DatabaseHandle, openDatabase } from "./db/database.js";
import { migrateToLatest } from "./db/migrator.js";
import { write } from "./db/write.js";
import { DeferredHandler } from "./http/handler.js";
import { type Listener, listen } from "./http/listener.js";
import { resolveSecretKey } from "./jwt/server-secret-key.js";
import { checkAuthOptions, declaredPermissions } from "./permissions/declarations.js";
import { OWN_SERVICE, registerPermissions } from "./permissions/permission.service.js";
import { SERVICES, adminExtras, adminRoutes, dataRoutes, planeHandler } from "./routes/planes.js";

export { SERVICES };
export type { ServerHooks };

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

/**
 * Starts a server: binds its ports (answering 503 until ready), opens and
 * migrates the database, builds the application (createAppContext), registers
 * its own permissions, bootstraps, listens for invalidations, then serves.
 */
export async function startServer(config: Config, logger: Logger, hooks: ServerHooks = {}): Promise<Server> {
  const problems = checkAuthOptions([...SERVICES]);
  if (problems.length > 0) throw new Error(`invalid auth options: ${problems.join("; ")}`);
  const { listeners, dataPlane, adminPlane } = await bindPorts(config);
  let database: DatabaseHandle;
  try {
    database = await openDatabase({ ...config.database, databaseUrl: config.database.url, logger });
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close(0)));
    throw err;
  }
  let ctx: AppContext | undefined;
  try {
    const applied = await migrateToLatest(database.db);
    if (applied.length > 0) logger.info({ migrations: applied }, "database migrated");
    const secretKey = await resolveSecretKey(
      database.db,
      { configured: config.signing.secretKey, databaseUrl: config.database.url, dataDir: config.database.dataDir },
      logger,
    );
    const app = createAppContext({ ...config, signing: { ...config.signing, secretKey } }, logger, database, hooks);
    ctx = app;
    // Limited keys fail closed until Redis answers: give it its connect timeout before serving, but start without it.
    if (app.globalRateLimiter !== undefined && !(await app.globalRateLimiter.connected(config.redis!.connectTimeoutMs))) {
      logger.warn("redis (rate limits) not reachable at start: keys with a rate limit fail with unavailable until it is");
    }

    const own = declaredPermissions([...SERVICES]).get(OWN_SERVICE) ?? [];
    await write(app, undefined, (w) => registerPermissions(w, SERVER_AUTHORITY, OWN_SERVICE, own));
    const boot = await bootstrap(database.db, app.tokens, config.tokens.bootstrapToken);
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

    await database.listen(INVALIDATION_CHANNEL, app.onInvalidation, app.onListenerState);

    if (adminPlane === undefined) {
      dataPlane.serve(planeHandler(app, (r) => (dataRoutes(app)(r), adminRoutes(app)(r)), adminExtras(app)));
    } else {
      dataPlane.serve(planeHandler(app, dataRoutes(app)));
      adminPlane.serve(planeHandler(app, adminRoutes(app), adminExtras(app)));
    }
    logger.info(
      { port: listeners[0]!.port, admin_port: listeners[1]?.port, database: database.kind, rate_limits: config.redis ? "redis" : "local" },
      "apikeys listening",
    );

    let stopping: Promise<void> | undefined;
    return {
      ctx: app,
      port: listeners[0]!.port,
      adminPort: listeners[1]?.port,
      bootstrapToken: boot?.token,
      stop() {
        stopping ??= (async () => {
          // Open streams would otherwise hold the grace period; their clients reconnect elsewhere.
          app.invalidations.close();
          await Promise.all(listeners.map((l) => l.close(config.http.shutdownGraceMs)));
          await app.close();
          await database.close();
        })();
        return stopping;
      },
    };
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close(0)));
    await ctx?.close();
    await database.close();
    throw err;
  }
}

/**
 * Binds the ports before the database is touched: a start that cannot have its
 * port (EADDRINUSE) fails without opening, migrating or checkpointing anything.
 * Until the service is ready they answer 503.
 */
async function bindPorts(config: Config): Promise<{ listeners: Listener[]; dataPlane: DeferredHandler; adminPlane: DeferredHandler | undefined }> {
  const { http } = config;
  const dataPlane = new DeferredHandler();
  const adminPlane = http.adminPort === undefined ? undefined : new DeferredHandler();
  const listeners: Listener[] = [await listen(dataPlane.handle, http.port, http.host, http.limits)];
  if (adminPlane !== undefined) {
    try {
      listeners.push(await listen(adminPlane.handle, http.adminPort!, http.adminHost, http.limits));
    } catch (err) {
      await listeners[0]!.close(0);
      throw err;
    }
  }
  return { listeners, dataPlane, adminPlane };
}
