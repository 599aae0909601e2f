import type { DescMethod } from "@bufbuild/protobuf";
import type { ConnectError, ContextValues, Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { authenticatedKey, peerAddress } from "../auth/auth-context.js";
import { codeName } from "../errors.js";
import type { KeyRecord } from "../keys/key-record.js";
import type { Verifier } from "../verify/verifier.js";
import { type HeaderReader, authInterceptor, authenticate, failureThrottleInterceptor, refuseIfThrottled } from "./auth.js";
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
  /** The request's headers, read as `Headers.get` reads them. */
  headers: HeaderReader;
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

  /**
   * Runs `invoke` through the same steps as `interceptors`; what it throws leaves as
   * toConnectError's ConnectError. Without a promise when nothing on the way needs one
   * (a cached caller key, an implementation that answers at once): the result, or the
   * error thrown, comes back at once; else as a promise that settles the same way.
   */
  run<O>(call: PlainCall, invoke: () => O | Promise<O>): O | Promise<O> {
    const started = performance.now();
    let key: ReturnType<typeof authenticate>;
    try {
      const peer = call.values.get(peerAddress);
      refuseIfThrottled(this.verifier, call.method, peer);
      key = authenticate(this.verifier, call.method, call.headers, peer);
    } catch (err) {
      throw this.failed(call, started, err);
    }
    if (key instanceof Promise) {
      return key.then(
        (k) => this.invoke(call, started, k, invoke),
        (err: unknown) => {
          throw this.failed(call, started, err);
        },
      );
    }
    return this.invoke(call, started, key, invoke);
  }

  private invoke<O>(call: PlainCall, started: number, key: KeyRecord | undefined, invoke: () => O | Promise<O>): O | Promise<O> {
    let output: O | Promise<O>;
    try {
      if (key !== undefined) call.values.set(authenticatedKey, key);
      output = invoke();
    } catch (err) {
      throw this.failed(call, started, err);
    }
    if (output instanceof Promise) {
      return output.then(
        (o: O) => this.answered(call, started, o),
        (err: unknown) => {
          throw this.failed(call, started, err);
        },
      );
    }
    return this.answered(call, started, output);
  }

  private answered<O>(call: PlainCall, started: number, output: O): O {
    try {
      this.metrics.callAnswered(call.method, output);
      this.metrics.callEnded(call.rpc, "ok", started);
      this.log.ok(call.rpc, call.values.get(authenticatedKey)?.id, started);
    } catch (err) {
      throw this.failed(call, started, err);
    }
    return output;
  }

  /** Counts and logs a failed call; returns the ConnectError it ends with. */
  private failed(call: PlainCall, started: number, err: unknown): ConnectError {
    const error = toConnectError(err);
    this.metrics.callEnded(call.rpc, codeName(error.code), started);
    this.log.failed(call.rpc, call.values.get(authenticatedKey)?.id, started, error, err);
    return error;
  }
}
