import type { AppContext } from "../context.js";
import type { HttpHandler } from "./handler.js";

/**
 * Plain-HTTP probes: GET /healthz answers 200 while the process serves requests
 * (liveness: restarting will not fix a database outage), GET /readyz answers 200
 * only while the database does and invalidations are live, 503 otherwise (readiness).
 */
export function probesHandler(ctx: AppContext): HttpHandler {
  return async (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/healthz" && path !== "/readyz") return false;
    const send = (status: number, body: object, headers: Record<string, string> = {}) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { ...headers, "content-type": "application/json", "cache-control": "no-store", "content-length": String(Buffer.byteLength(text)) });
      if (req.method === "HEAD") res.end();
      else res.end(text);
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(405, { code: 12, message: `method ${req.method} not allowed on ${path}; allowed: GET, HEAD`, details: [] }, { allow: "GET, HEAD" });
      return true;
    }
    if (path === "/healthz") {
      send(200, { status: "ok" });
      return true;
    }
    const database = await ctx.checkDatabase();
    const ready = database.healthy && ctx.verifier.isListening;
    send(ready ? 200 : 503, {
      status: ready ? "ready" : "unavailable",
      database: database.message,
      invalidations: ctx.verifier.isListening ? "live" : "down",
    });
    return true;
  };
}
