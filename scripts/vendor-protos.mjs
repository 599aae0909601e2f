// Copies the gRPC health and reflection protos (served next to our contract) from
// their installed npm packages into third_party/proto, where buf resolves imports and
// generates from. Runs on install. google/api lives in proto/ itself, so the contract
// builds on its own (and ships that way in @apikeys/client).
import { cpSync, existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const root = join(import.meta.dirname, "..", "third_party", "proto");

// [npm package, file inside it, where it goes under third_party/proto]
const PROTOS = [
  ["google-proto-files", "google/rpc/code.proto", "google/rpc/code.proto"],
  ["google-proto-files", "google/rpc/error_details.proto", "google/rpc/error_details.proto"],
  ["google-proto-files", "google/rpc/status.proto", "google/rpc/status.proto"],
  ["grpc-health-check", "proto/health/v1/health.proto", "grpc/health/v1/health.proto"],
  ["@grpc/reflection", "build/proto/grpc/reflection/v1/reflection.proto", "grpc/reflection/v1/reflection.proto"],
  ["@grpc/reflection", "build/proto/grpc/reflection/v1alpha/reflection.proto", "grpc/reflection/v1alpha/reflection.proto"],
];

const packageDirs = new Map();
for (const [pkg, file, to] of PROTOS) {
  if (!packageDirs.has(pkg)) packageDirs.set(pkg, dirname(require.resolve(`${pkg}/package.json`)));
  const from = join(packageDirs.get(pkg), file);
  if (!existsSync(from)) throw new Error(`${pkg} has no ${file}`);
  mkdirSync(dirname(join(root, to)), { recursive: true });
  cpSync(from, join(root, to));
}
