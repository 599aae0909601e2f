import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { extname, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { HttpHandler } from "./handler.js";

/** Where `npm run build` puts the dashboard, relative to this module. */
export const DASHBOARD_DIR = fileURLToPath(new URL("../../dist/web/", import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
  ".map": "application/json",
};

// The page talks only to its own origin; anything else is a bug or an injection.
const HTML_HEADERS = {
  "content-security-policy":
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; " +
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

// Vite puts content-hashed files under /assets/: their URL changes with their bytes.
const IMMUTABLE = "public, max-age=31536000, immutable";
const REVALIDATE = "no-cache";

interface StaticFile {
  body: Buffer;
  etag: string;
  contentType: string;
  /** The build's Brotli and gzip copies of the body, when it made them. */
  br?: Buffer;
  gzip?: Buffer;
}

/** A precompressed copy written beside `path` by the build (scripts/compress-web.mjs), unless older than it. */
async function sibling(path: string, suffix: ".br" | ".gz", mtimeMs: number): Promise<Buffer | undefined> {
  const info = await stat(path + suffix).catch(() => undefined);
  if (!info?.isFile() || info.mtimeMs < mtimeMs) return undefined;
  return readFile(path + suffix);
}

/** The encoding to answer with: the smallest the client accepts (q=0 refuses one). */
function chooseEncoding(acceptEncoding: string | undefined, file: StaticFile): "br" | "gzip" | undefined {
  if (acceptEncoding === undefined) return undefined;
  const accepted = new Set<string>();
  for (const part of acceptEncoding.toLowerCase().split(",")) {
    const [name = "", ...params] = part.trim().split(";");
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    if (q !== undefined && Number(q.slice(2)) === 0) continue;
    accepted.add(name.trim());
  }
  if (file.br !== undefined && accepted.has("br")) return "br";
  if (file.gzip !== undefined && (accepted.has("gzip") || accepted.has("*"))) return "gzip";
  return undefined;
}

type Request = Parameters<HttpHandler>[0];
type Response = Parameters<HttpHandler>[1];

/**
 * Serves the built dashboard in `dir`: files by path, and index.html for any
 * other GET that asks for HTML (client-side routes). Never serves outside `dir`,
 * never answers /api/ paths, and explains how to build when the build is missing.
 */
export function dashboardHandler(dir: string = DASHBOARD_DIR): HttpHandler {
  const root = resolve(dir);
  // Promises, so concurrent first requests for a file read and compress it once.
  const cache = new Map<string, { mtimeMs: number; file: Promise<StaticFile> }>();

  async function readStatic(path: string, mtimeMs: number): Promise<StaticFile> {
    const [body, br, gzip] = await Promise.all([readFile(path), sibling(path, ".br", mtimeMs), sibling(path, ".gz", mtimeMs)]);
    return {
      body,
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
      contentType: CONTENT_TYPES[extname(path)] ?? "application/octet-stream",
      ...(br !== undefined && { br }),
      ...(gzip !== undefined && { gzip }),
    };
  }

  async function load(path: string): Promise<StaticFile | undefined> {
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) return undefined;
    const hit = cache.get(path);
    if (hit && hit.mtimeMs === info.mtimeMs) return hit.file;
    const file = readStatic(path, info.mtimeMs);
    cache.set(path, { mtimeMs: info.mtimeMs, file });
    file.catch(() => cache.delete(path));
    return file;
  }

  function send(req: Request, res: Response, file: StaticFile, cacheControl: string): void {
    const encoding = chooseEncoding(req.headers["accept-encoding"], file);
    const body = encoding === undefined ? file.body : file[encoding]!;
    const headers: Record<string, string> = {
      "content-type": file.contentType,
      "cache-control": cacheControl,
      // One ETag per representation, so a cache never serves one encoding for another.
      etag: encoding === undefined ? file.etag : `${file.etag.slice(0, -1)}-${encoding}"`,
      "x-content-type-options": "nosniff",
      ...((file.br !== undefined || file.gzip !== undefined) && { vary: "accept-encoding" }),
      ...(encoding !== undefined && { "content-encoding": encoding }),
      ...(file.contentType.startsWith("text/html") && HTML_HEADERS),
    };
    if (req.headers["if-none-match"] === headers.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, "content-length": String(body.length) });
    if (req.method === "HEAD") res.end();
    else res.end(body);
  }

  return async (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const rawPath = (req.url ?? "/").split("?")[0]!;
    let path: string;
    try {
      path = decodeURIComponent(rawPath);
    } catch {
      return false;
    }
    if (path.startsWith("/api/") || path.includes("\0")) return false;

    const target = resolve(root, `.${path}`);
    if (target !== root && !target.startsWith(root + sep)) return false;

    const file = target === root ? undefined : await load(target);
    if (file) {
      send(req, res, file, path.startsWith("/assets/") ? IMMUTABLE : REVALIDATE);
      return true;
    }

    // The root is the dashboard for any client; other paths only for browsers asking for a page.
    const wantsHtml = path === "/" || (req.headers.accept ?? "").includes("text/html");
    if (!wantsHtml || extname(path) !== "") return false;
    const index = await load(resolve(root, "index.html"));
    if (!index) {
      res.writeHead(503, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end("The dashboard is not built. Run `npm run build` (npm start does this for you).\n");
      return true;
    }
    send(req, res, index, REVALIDATE);
    return true;
  };
}
