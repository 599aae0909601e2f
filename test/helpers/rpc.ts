import { create, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { SERVICES } from "../../src/server.js";
import { httpRoutes } from "../../src/transcoding/http-rules.js";

/** Every method the server implements, with its service. */
export function allMethods(): Array<{ service: DescService; method: DescMethod }> {
  return SERVICES.flatMap((service) => service.methods.map((method) => ({ service, method })));
}

/**
 * Calls any method with `input` (an empty message by default) and returns "ok" or
 * the error's code. A server stream counts as answered once its first message
 * arrives: an authorized WatchInvalidations call would otherwise never end.
 */
export async function callAny(
  transport: Transport,
  service: DescService,
  method: DescMethod,
  headers: Record<string, string>,
  input: Record<string, unknown> = {},
): Promise<"ok" | number> {
  const client = createClient(service, transport) as unknown as Record<
    string,
    (req: unknown, options: { headers: Record<string, string>; signal?: AbortSignal; timeoutMs?: number }) => unknown
  >;
  const message = create(method.input, input as never);
  try {
    if (method.methodKind === "server_streaming") {
      const abort = new AbortController();
      const stream = client[method.localName]!(message, { headers, signal: abort.signal }) as AsyncIterable<unknown>;
      for await (const _ of stream) break;
      abort.abort();
      return "ok";
    }
    await client[method.localName]!(message, { headers, timeoutMs: 10_000 });
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

/** A request path and HTTP method for each REST binding of `method`, with path variables filled in. */
export function restCalls(method: DescMethod): Array<{ httpMethod: string; path: string; hasBody: boolean }> {
  return httpRoutes([method.parent])
    .filter((r) => r.method === method)
    .map((r) => ({
      httpMethod: r.httpMethod,
      path: r.template.source.replace(/\{[^}]*\}/g, () => crypto.randomUUID()),
      hasBody: r.body !== undefined,
    }));
}
