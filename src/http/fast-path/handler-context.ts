import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import type { IncomingHttpHeaders } from "node:http";
import type { Readable } from "node:stream";
import { clampDeadline } from "../deadlines.js";

/** The abort reason of a call that ended (connect's context aborts without one, which builds a DOMException per call). */
const CALL_ENDED = new ConnectError("call ended", Code.Canceled);
/** The abort reason of a call whose request closed before the call ended. */
const REQUEST_CLOSED = new ConnectError("request closed", Code.Canceled);

/** What the fast path knows of a request when it builds its context. */
export interface RequestFacts {
  method: DescMethod;
  protocolName: "grpc" | "connect";
  headers: IncomingHttpHeaders;
  path: string;
  authority: string;
  encrypted: boolean;
  /** The parsed timeout header, if any (already clamped). */
  timeoutMs: number | undefined;
  values: ContextValues;
  /** The request (HTTP/1.1) or stream (HTTP/2): its "close" aborts the signal. */
  source: Readable & { closed?: boolean };
}

/**
 * The HandlerContext connect's createHandlerContext builds (same fields, same
 * header conversion, same URL, same deadline), built lazily: the request Headers,
 * the URL, the AbortSignal and its deadline timer and the response Headers exist
 * only once the implementation reads them. VerifyToken and TestApiKey read only
 * `values`, so a warm call builds none of them.
 */
export class LazyHandlerContext implements HandlerContext {
  readonly requestMethod = "POST";
  private readonly deadlineAt: number | undefined;
  private controller: AbortController | undefined;
  private ended = false;
  private cleanup: (() => void) | undefined;
  private header: Headers | undefined;
  private response: Headers | undefined;
  private trailer: Headers | undefined;

  constructor(private readonly facts: RequestFacts) {
    this.deadlineAt = facts.timeoutMs === undefined ? undefined : Date.now() + facts.timeoutMs;
  }

  get method(): DescMethod {
    return this.facts.method;
  }
  get service(): DescService {
    return this.facts.method.parent;
  }
  get protocolName(): string {
    return this.facts.protocolName;
  }
  get values(): ContextValues {
    return this.facts.values;
  }
  get url(): string {
    return new URL(this.facts.path, `${this.facts.encrypted ? "https" : "http"}://${this.facts.authority}`).toString();
  }
  // A method, not an arrow field: a per-call closure (wrapped by tsx's keepNames) for what neither handler reads.
  timeoutMs(): number | undefined {
    return this.deadlineAt === undefined ? undefined : this.deadlineAt - Date.now();
  }

  get requestHeader(): Headers {
    if (this.header === undefined) {
      const header = new Headers();
      for (const [k, v] of Object.entries(this.facts.headers)) {
        if (k.startsWith(":") || v === undefined) continue;
        if (typeof v === "string") header.append(k, v);
        else for (const e of v) header.append(k, e);
      }
      clampDeadline(header);
      this.header = header;
    }
    return this.header;
  }
  get responseHeader(): Headers {
    return (this.response ??= new Headers());
  }
  get responseTrailer(): Headers {
    return (this.trailer ??= new Headers());
  }
  /** The response headers and trailers the implementation set, if it touched them. */
  get touched(): { header: Headers | undefined; trailer: Headers | undefined } {
    return { header: this.response, trailer: this.trailer };
  }

  /** Aborts on the deadline, when the request closes before the call ends, and when the call ends. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = (this.controller = new AbortController());
      if (this.ended) controller.abort(CALL_ENDED);
      else if (this.facts.source.destroyed || this.facts.source.closed === true) controller.abort(REQUEST_CLOSED);
      else {
        const source = this.facts.source;
        const onClose = () => this.abort(REQUEST_CLOSED);
        source.once("close", onClose);
        const offClose = () => source.off("close", onClose);
        let timer: NodeJS.Timeout | undefined;
        if (this.deadlineAt !== undefined) {
          const expire = () => controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
          const left = this.deadlineAt - Date.now();
          if (left <= 0) expire();
          else timer = setTimeout(expire, left);
        }
        this.cleanup = () => {
          clearTimeout(timer);
          offClose();
        };
      }
    }
    return this.controller.signal;
  }

  /** Ends the call: the signal, if anyone asked for it, aborts with `reason` (or CALL_ENDED). */
  abort(reason: unknown = CALL_ENDED): void {
    this.ended = true;
    this.cleanup?.();
    this.cleanup = undefined;
    this.controller?.abort(reason);
  }
}
