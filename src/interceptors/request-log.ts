import { Code, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { authenticatedKey } from "../auth/auth-context.js";
import { codeName } from "../errors.js";
import { toConnectError } from "./errors.js";

/** One log line per call: method, outcome code, duration and key id (never the token). */
export function requestLogInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const fields = () => ({
      rpc: `${req.service.typeName}/${req.method.name}`,
      key_id: req.contextValues.get(authenticatedKey)?.id,
      duration_ms: Math.round((performance.now() - started) * 100) / 100,
    });
    try {
      const res = await next(req);
      logger.info({ ...fields(), code: "ok" }, "rpc");
      return res;
    } catch (err) {
      const connectErr = toConnectError(err);
      const code = connectErr.code;
      const serverFault = code === Code.Internal || code === Code.Unknown;
      logger[serverFault ? "error" : "info"](
        { ...fields(), code: codeName(code), ...(serverFault && { err: connectErr.cause ?? err }) },
        "rpc",
      );
      throw connectErr;
    }
  };
}
