// Builds dist/esm and dist/cjs (each with .d.ts) and copies the contract into proto/.
// Skips the work when the build is newer than everything it is made from, so
// `npm pack` (prepack) and `npm install` (postinstall) cost nothing on a fresh build.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const pkg = join(import.meta.dirname, "..");
const contract = join(pkg, "..", "..", "proto");
// Written last: its time is the build's.
const marker = join(pkg, "dist", "cjs", "package.json");
const inputs = ["src", "scripts", "package.json", "tsconfig.json", "tsconfig.cjs.json", contract].map((p) => join(pkg, p));

function newestMtime(path) {
  const info = statSync(path, { throwIfNoEntry: false });
  if (!info) return 0;
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

const builtAt = statSync(marker, { throwIfNoEntry: false })?.mtimeMs ?? 0;
if (builtAt > 0 && builtAt >= Math.max(...inputs.map(newestMtime))) process.exit(0);

let tsc;
try {
  tsc = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin", "tsc");
} catch {
  // An install without devDependencies cannot build, and the server cannot run without the build.
  console.warn("@apikeys/client: not built (typescript is not installed); install with `npm ci`, then `npm prune --omit=dev`.");
  process.exit(0);
}
rmSync(join(pkg, "dist"), { recursive: true, force: true });
execFileSync(process.execPath, [tsc, "-p", join(pkg, "tsconfig.json")], { stdio: "inherit" });
execFileSync(process.execPath, [tsc, "-p", join(pkg, "tsconfig.cjs.json")], { stdio: "inherit" });

// The contract, self-contained (apikeys/v1 and the google/api files it imports), as the repository keeps it.
if (!existsSync(join(contract, "apikeys", "v1", "options.proto"))) throw new Error(`no contract at ${contract}`);
rmSync(join(pkg, "proto"), { recursive: true, force: true });
mkdirSync(join(pkg, "proto"));
for (const dir of ["apikeys", "google"]) cpSync(join(contract, dir), join(pkg, "proto", dir), { recursive: true });

// The package is "type": "module"; this marks the CommonJS build as such.
writeFileSync(marker, `${JSON.stringify({ type: "commonjs" })}\n`);
