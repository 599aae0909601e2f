import { Code, type ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { authenticatedKey } from "../auth/auth-context.js";
import { codeName } from "../errors.js";
import { toConnectError } from "./errors.js";

/**
 * One log line per call: method, outcome code, duration and key id (never the
 * token). Server faults are logged at `error` with their cause, the rest at
 * `info`; a line below the configured level costs no object.
 */
export class CallLog {
  constructor(private readonly logger: Logger) {}

  ok(rpc: string, keyId: string | undefined, started: number): void {
    if (this.logger.isLevelEnabled("info")) this.logger.info({ ...fields(rpc, keyId, started), code: "ok" }, "rpc");
  }

  /** `error` is what the caller is told (toConnectError), `thrown` what was thrown. */
  failed(rpc: string, keyId: string | undefined, started: number, error: ConnectError, thrown: unknown): void {
    const serverFault = error.code === Code.Internal || error.code === Code.Unknown;
    const level = serverFault ? "error" : "info";
    if (!this.logger.isLevelEnabled(level)) return;
    this.logger[level]({ ...fields(rpc, keyId, started), code: codeName(error.code), ...(serverFault && { err: error.cause ?? thrown }) }, "rpc");
  }
}

function fields(rpc: string, keyId: string | undefined, started: number) {
  return { rpc, key_id: keyId, duration_ms: Math.round((performance.now() - started) * 100) / 100 };
}

/** The CallLog as an interceptor: errors leave it mapped by toConnectError. */
export function requestLogInterceptor(log: CallLog): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const rpc = `${req.service.typeName}/${req.method.name}`;
    try {
      const res = await next(req);
      log.ok(rpc, req.contextValues.get(authenticatedKey)?.id, started);
      return res;
    } catch (err) {
      const error = toConnectError(err);
      log.failed(rpc, req.contextValues.get(authenticatedKey)?.id, started, error, err);
      throw error;
    }
  };
}
