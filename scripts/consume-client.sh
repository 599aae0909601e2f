#!/usr/bin/env bash
# Packs @apikeys/client and uses the tarball as another team would: in fresh projects
# outside the repository that see only the tarball and the public npm registry, against
# a real apikeys server (embedded PGlite in a temporary directory, or DATABASE_URL).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
fixtures="$repo/scripts/consume-client"
work=$(mktemp -d "${TMPDIR:-/tmp}/apikeys-consume.XXXXXX")
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  [ -z "$server_pid" ] || wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n--- %s\n' "$*"; }
npm_install() { npm install --no-audit --no-fund --loglevel=error "$@"; }

step "npm pack -w @apikeys/client"
(cd "$repo" && npm pack -w @apikeys/client --pack-destination "$work" --silent >/dev/null)
tarball=$(ls "$work"/apikeys-client-*.tgz)
if tar -tzf "$tarball" | grep -E '\.ts$' | grep -Ev '\.d\.ts$'; then echo "tarball ships TypeScript sources" >&2; exit 1; fi
echo "ok - $(basename "$tarball"): $(tar -tzf "$tarball" | wc -l) files"

step "fresh install of the tarball alone (npm adds its required peers)"
mkdir "$work/plain" && cd "$work/plain"
echo '{"name":"plain-consumer","version":"0.0.0","private":true}' >package.json
npm_install "$tarball"
size=$(du -sk node_modules | cut -f1)
echo "node_modules: ${size} KiB"
[ "$size" -le $((15 * 1024)) ] || { echo "node_modules is ${size} KiB, over 15 MiB" >&2; exit 1; }
for unwanted in pg kysely @electric-sql/pglite pino tsx; do
  [ ! -e "node_modules/$unwanted" ] || { echo "installs $unwanted" >&2; exit 1; }
done
echo "ok - ≤ 15 MiB, none of pg, kysely, pglite, pino, tsx"
[ -z "$(npm query ':attr(scripts, [postinstall])' | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).map(p=>p.name).join(" ")))')" ] \
  || { echo "a dependency has a postinstall script" >&2; exit 1; }
# Copied in: it must resolve the package from this project, not from the repository.
cp "$fixtures/load.mjs" . && node load.mjs

step "apikeys server (real, port 0)"
admin_token=$(cd "$repo" && node --import tsx scripts/token.ts)
(cd "$repo" && exec env PORT=0 HOST=127.0.0.1 APIKEYS_DATA_DIR="$work/data" APIKEYS_BOOTSTRAP_TOKEN="$admin_token" \
  ${DATABASE_URL:+DATABASE_URL="$DATABASE_URL"} node --import tsx src/index.ts >"$work/server.log" 2>&1) &
server_pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(node -e 'for (const l of require("fs").readFileSync(process.argv[1],"utf8").split("\n")) if (l.includes("\"apikeys listening\"")) { console.log(JSON.parse(l).port); break }' "$work/server.log")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/server.log" >&2; exit 1; }
echo "ok - apikeys listening on $port"

step "services of another team: Connect (buf generate), Express, Fastify, grpc-js — compiled by a strict tsc"
mkdir "$work/services" && cd "$work/services"
cp -r "$fixtures/proto" "$fixtures/src" "$fixtures/buf.yaml" "$fixtures/buf.gen.yaml" "$fixtures/tsconfig.json" .
echo '{"name":"shop-services","version":"0.0.0","private":true,"type":"module"}' >package.json
npm_install "$tarball" @bufbuild/protobuf@^2 @connectrpc/connect@^2 @connectrpc/connect-node@^2 \
  express@^5 fastify@^5 @grpc/grpc-js@^1 @grpc/proto-loader@^0.8 \
  typescript@~5.9 @types/node@^20 @types/express@^5 @bufbuild/buf@^1 @bufbuild/protoc-gen-es@^2
npx buf build node_modules/@apikeys/client/proto   # the shipped contract alone
npx buf build && npx buf generate
npx tsc -p tsconfig.json
echo "ok - tsc (nodenext, strict, exactOptionalPropertyTypes, noUncheckedIndexedAccess, skipLibCheck: false)"
cp "$fixtures/load.mjs" . && node load.mjs @apikeys/client/grpc-js
APIKEYS_URL="http://127.0.0.1:$port" APIKEYS_ADMIN_TOKEN="$admin_token" node dist/check.js

step "protoc -I <package>/proto alone; a Python grpcio client"
proto="$work/services/node_modules/@apikeys/client/proto"
mkdir "$work/python"
protoc -I "$proto" --python_out="$work/python" --grpc_python_out="$work/python" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  $(cd "$proto" && find apikeys google -name '*.proto')
APIKEYS_GRPC_TARGET="127.0.0.1:$port" APIKEYS_ADMIN_TOKEN="$admin_token" /usr/bin/python3 "$fixtures/python_client.py" "$work/python"

step "all consumer checks passed"
