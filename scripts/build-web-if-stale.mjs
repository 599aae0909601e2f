// Builds the dashboard when dist/web is missing or older than its sources, so
// `npm start` on a fresh clone serves it and a rebuild costs nothing when fresh.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const built = join(root, "dist/web/index.html");
const sources = ["web", "src/gen", "packages/client/src", "package-lock.json"].map((p) => join(root, p));

function newestMtime(path) {
  const info = statSync(path, { throwIfNoEntry: false });
  if (!info) return 0;
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

const fresh = () => (statSync(built, { throwIfNoEntry: false })?.mtimeMs ?? 0) >= Math.max(...sources.map(newestMtime));
if (fresh()) process.exit(0);

if (!existsSync(join(root, "node_modules/vite"))) {
  // A production install without devDependencies cannot build; the server still
  // starts and its `/` says how to build the dashboard.
  console.warn("apikeys: dashboard not built and vite is not installed; run `npm ci && npm run build` to get it.");
  process.exit(0);
}

// One build at a time: test files running in parallel each call this, and a build
// replacing dist/web under another file's running server failed its requests.
const lock = join(root, "dist/.web-build.lock");
mkdirSync(join(root, "dist"), { recursive: true });
for (const deadline = Date.now() + 180_000; ; ) {
  try {
    mkdirSync(lock);
    break;
  } catch (err) {
    if (err.code !== "EEXIST") throw err;
    // A lock left by a build that died (a build takes well under two minutes).
    const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
    if (age > 120_000 || Date.now() > deadline) rmSync(lock, { recursive: true, force: true });
    else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
  }
}
let status = 0;
try {
  // Another caller may have built it while this one waited.
  if (!fresh()) {
    console.log(existsSync(built) ? "apikeys: dashboard sources changed, rebuilding…" : "apikeys: building the dashboard…");
    status = spawnSync("npm", ["run", "--silent", "build:web"], { cwd: root, stdio: "inherit" }).status ?? 1;
  }
} finally {
  rmSync(lock, { recursive: true, force: true });
}
process.exit(status);
