// Builds the dashboard when dist/web is missing or older than its sources, so
// `npm start` on a fresh clone serves it and a rebuild costs nothing when fresh.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
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

const builtAt = statSync(built, { throwIfNoEntry: false })?.mtimeMs ?? 0;
if (builtAt >= Math.max(...sources.map(newestMtime))) process.exit(0);

if (!existsSync(join(root, "node_modules/vite"))) {
  // A production install without devDependencies cannot build; the server still
  // starts and its `/` says how to build the dashboard.
  console.warn("apikeys: dashboard not built and vite is not installed; run `npm ci && npm run build` to get it.");
  process.exit(0);
}

console.log(builtAt === 0 ? "apikeys: building the dashboard…" : "apikeys: dashboard sources changed, rebuilding…");
const result = spawnSync("npm", ["run", "--silent", "build:web"], { cwd: root, stdio: "inherit" });
process.exit(result.status ?? 1);
