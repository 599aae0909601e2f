import { PassThrough } from "node:stream";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ApiKeysService } from "../src/gen/apikeys/v1/api_keys_pb.js";
import { LazyHandlerContext, type RequestFacts } from "../src/http/fast-path/handler-context.js";

/*
 * The fast path's handler context builds its parts only when read; read, they must
 * behave as connect's createHandlerContext's do.
 */

const method = ApiKeysService.methods.find((m) => m.name === "VerifyToken")!;

function facts(overrides: Partial<RequestFacts> = {}): RequestFacts {
  return {
    method,
    protocolName: "grpc",
    headers: { ":path": "/x", "content-type": "application/grpc", authorization: "Bearer t", "x-many": ["a", "b"], "grpc-timeout": "99999999H" },
    path: "/apikeys.v1.ApiKeysService/VerifyToken",
    authority: "example.test:8080",
    encrypted: false,
    timeoutMs: undefined,
    values: createContextValues(),
    source: new PassThrough(),
    ...overrides,
  };
}

const reasonOf = (signal: AbortSignal) => (signal.reason instanceof ConnectError ? signal.reason.code : undefined);

describe("LazyHandlerContext", () => {
  it("reads like connect's context: service, method, URL, headers without pseudo-headers, a clamped deadline header", () => {
    const context = new LazyHandlerContext(facts());
    expect(context.service).toBe(ApiKeysService);
    expect(context.method).toBe(method);
    expect(context.requestMethod).toBe("POST");
    expect(context.url).toBe("http://example.test:8080/apikeys.v1.ApiKeysService/VerifyToken");
    expect(new LazyHandlerContext(facts({ encrypted: true })).url).toMatch(/^https:/);
    expect(context.requestHeader.get("authorization")).toBe("Bearer t");
    expect(context.requestHeader.get("x-many")).toBe("a, b");
    expect([...context.requestHeader.keys()].some((k) => k.startsWith(":"))).toBe(false);
    // clampDeadline caps what a client may ask for.
    expect(context.requestHeader.get("grpc-timeout")).not.toBe("99999999H");
    expect(context.timeoutMs()).toBeUndefined();
    expect(context.touched).toEqual({ header: undefined, trailer: undefined });
    context.responseHeader.set("x-a", "1");
    expect(context.touched.header?.get("x-a")).toBe("1");
  });

  it("aborts its signal when the request closes, whether it was read before or after", async () => {
    const early = facts();
    const before = new LazyHandlerContext(early);
    const signal = before.signal;
    (early.source as PassThrough).destroy();
    await new Promise((r) => setImmediate(r));
    expect(signal.aborted).toBe(true);
    expect(reasonOf(signal)).toBe(Code.Canceled);

    const late = facts();
    (late.source as PassThrough).destroy();
    expect(new LazyHandlerContext(late).signal.aborted).toBe(true);
  });

  it("aborts on its deadline, at once when it is already past, and when the call ends", async () => {
    const soon = new LazyHandlerContext(facts({ timeoutMs: 20 }));
    expect(soon.timeoutMs()).toBeGreaterThan(0);
    const signal = soon.signal;
    expect(signal.aborted).toBe(false);
    await new Promise((r) => setTimeout(r, 60));
    expect(reasonOf(signal)).toBe(Code.DeadlineExceeded);

    expect(reasonOf(new LazyHandlerContext(facts({ timeoutMs: 0 })).signal)).toBe(Code.DeadlineExceeded);

    const ended = new LazyHandlerContext(facts({ timeoutMs: 10_000 }));
    const endedSignal = ended.signal;
    ended.abort();
    expect(reasonOf(endedSignal)).toBe(Code.Canceled);
    // A signal first read after the call ended is aborted too.
    const after = new LazyHandlerContext(facts());
    after.abort();
    expect(after.signal.aborted).toBe(true);
  });
});
