import { ConfigError, readConfig } from "./config.js";
import { createLogger } from "./logger.js";
import { startServer } from "./server.js";

let config;
try {
  config = readConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`apikeys: configuration error: ${err.message}\n`);
  process.exit(2);
}
const logger = createLogger(config.logLevel);

try {
  const server = await startServer(config, logger);
  let signals = 0;
  const shutdown = (signal: string) => {
    if (++signals > 1) process.exit(1);
    logger.info({ signal }, "shutting down");
    server.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
} catch (err) {
  logger.fatal({ err }, "apikeys failed to start");
  process.stderr.write(`apikeys: failed to start: ${(err as Error).message}\n`);
  process.exit(1);
}
