import type { DescMethod } from "@bufbuild/protobuf";
import type { ContextValues, Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { authenticatedKey, peerAddress } from "../auth/auth-context.js";
import { codeName } from "../errors.js";
import type { Verifier } from "../verify/verifier.js";
import { authInterceptor, authenticate, failureThrottleInterceptor, refuseIfThrottled } from "./auth.js";
import { errorInterceptor, toConnectError } from "./errors.js";
import type { Metrics } from "./metrics.js";
import { CallLog, requestLogInterceptor } from "./request-log.js";

/** What `DataPlane.run` needs of a call that did not go through connect. */
export interface PlainCall {
  method: DescMethod;
  /** `service.typeName/method.name`, as logs and metrics name it. */
  rpc: string;
  /** The call's context values (peer address in, authenticated key out). */
  values: ContextValues;
  /** One request header as `Headers.get` returns it. */
  header(name: string): string | null;
}

/**
 * The data plane's steps around every call, outermost first: error mapping,
 * request log, metrics, failure throttle, authentication. They exist in two forms
 * built from the same functions: `interceptors`, which connect runs, and `run`,
 * which the fast path (http/fast-path/) runs without connect's pipeline. A step
 * added to one must be added to the other; the fast path only serves a service
 * whose interceptor list is exactly `interceptors`.
 */
export class DataPlane {
  readonly interceptors: Interceptor[];
  private readonly log: CallLog;

  constructor(
    private readonly verifier: Verifier,
    logger: Logger,
    private readonly metrics: Metrics,
  ) {
    this.log = new CallLog(logger);
    this.interceptors = [
      errorInterceptor(),
      requestLogInterceptor(this.log),
      metrics.interceptor(),
      failureThrottleInterceptor(verifier),
      authInterceptor(verifier),
    ];
  }

  /** Runs `invoke` through the same steps as `interceptors`; what it throws leaves as toConnectError's ConnectError. */
  async run<O>(call: PlainCall, invoke: () => Promise<O>): Promise<O> {
    const started = performance.now();
    try {
      const peer = call.values.get(peerAddress);
      refuseIfThrottled(this.verifier, call.method, peer);
      const key = await authenticate(this.verifier, call.method, call.header, peer);
      if (key !== undefined) call.values.set(authenticatedKey, key);
      const output = await invoke();
      this.metrics.callAnswered(call.method, output);
      this.metrics.callEnded(call.rpc, "ok", started);
      this.log.ok(call.rpc, call.values.get(authenticatedKey)?.id, started);
      return output;
    } catch (err) {
      const error = toConnectError(err);
      this.metrics.callEnded(call.rpc, codeName(error.code), started);
      this.log.failed(call.rpc, call.values.get(authenticatedKey)?.id, started, error, err);
      throw error;
    }
  }
}
