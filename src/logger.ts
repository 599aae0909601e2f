import { pino, type Logger } from "pino";

/** JSON logger that never prints credentials, even if a header object is logged. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "apikeys" },
    redact: {
      paths: [
        "authorization",
        "token",
        "*.authorization",
        "*.token",
        '*["x-api-key"]',
        "*.headers.authorization",
        '*.headers["x-api-key"]',
      ],
      censor: "[redacted]",
    },
  });
}
