// Builds dist/esm and dist/cjs (each with .d.ts) and copies the contract into proto/.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const pkg = join(import.meta.dirname, "..");
const tsc = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin", "tsc");

rmSync(join(pkg, "dist"), { recursive: true, force: true });
execFileSync(process.execPath, [tsc, "-p", join(pkg, "tsconfig.json")], { stdio: "inherit" });
execFileSync(process.execPath, [tsc, "-p", join(pkg, "tsconfig.cjs.json")], { stdio: "inherit" });
// The package is "type": "module"; this marks the CommonJS build as such.
writeFileSync(join(pkg, "dist", "cjs", "package.json"), `${JSON.stringify({ type: "commonjs" })}\n`);

// The contract, self-contained (apikeys/v1 and the google/api files it imports), as the repository keeps it.
const contract = join(pkg, "..", "..", "proto");
if (!existsSync(join(contract, "apikeys", "v1", "options.proto"))) throw new Error(`no contract at ${contract}`);
rmSync(join(pkg, "proto"), { recursive: true, force: true });
mkdirSync(join(pkg, "proto"));
for (const dir of ["apikeys", "google"]) cpSync(join(contract, dir), join(pkg, "proto", dir), { recursive: true });
