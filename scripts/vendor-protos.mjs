// Copies the google.api HTTP annotation protos from the google-proto-files npm
// package into third_party/proto, where buf resolves imports from. Runs on install.
import { cpSync, existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
let source;
try {
  source = dirname(require.resolve("google-proto-files/package.json"));
} catch {
  // Production installs (npm ci --omit=dev) have no proto sources and need none.
  process.exit(0);
}
const target = join(import.meta.dirname, "..", "third_party", "proto", "google", "api");
mkdirSync(target, { recursive: true });
for (const file of ["annotations.proto", "http.proto"]) {
  const from = join(source, "google", "api", file);
  if (!existsSync(from)) throw new Error(`google-proto-files has no google/api/${file}`);
  cpSync(from, join(target, file));
}
