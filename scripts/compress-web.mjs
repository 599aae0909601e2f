// Writes a Brotli (.br) and a gzip (.gz) copy beside every compressible file of
// the built dashboard, at the strongest settings: paid once per build, so the
// server only picks the copy the client accepts (src/http/dashboard.ts).
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const dir = fileURLToPath(new URL("../dist/web/", import.meta.url));
const COMPRESSIBLE = new Set([".html", ".js", ".css", ".json", ".svg", ".txt", ".map"]);
// Below this, compression saves less than the headers it adds.
const MIN_SIZE = 1024;

function* files(path) {
  for (const entry of readdirSync(path)) {
    const full = join(path, entry);
    if (statSync(full).isDirectory()) yield* files(full);
    else yield full;
  }
}

let saved = 0;
for (const file of files(dir)) {
  if (!COMPRESSIBLE.has(extname(file))) continue;
  const body = readFileSync(file);
  if (body.length < MIN_SIZE) continue;
  const br = brotliCompressSync(body, {
    params: { [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY, [constants.BROTLI_PARAM_SIZE_HINT]: body.length },
  });
  const gz = gzipSync(body, { level: 9 });
  if (br.length < body.length) writeFileSync(`${file}.br`, br);
  if (gz.length < body.length) writeFileSync(`${file}.gz`, gz);
  saved += body.length - Math.min(br.length, body.length);
}
console.log(`apikeys: dashboard precompressed (brotli saves ${Math.round(saved / 1024)} KiB)`);
