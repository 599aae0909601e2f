import type { Registry } from "prom-client";
import type { HttpHandler } from "./handler.js";

/** Serves GET /metrics in the Prometheus text format from `registry`. */
export function metricsEndpoint(registry: Registry): HttpHandler {
  return async (req, res) => {
    if ((req.url ?? "/").split("?")[0] !== "/metrics") return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" });
      res.end("method not allowed\n");
      return true;
    }
    const text = await registry.metrics();
    res.writeHead(200, {
      "content-type": registry.contentType,
      "cache-control": "no-store",
      "content-length": String(Buffer.byteLength(text)),
    });
    if (req.method === "HEAD") res.end();
    else res.end(text);
    return true;
  };
}
