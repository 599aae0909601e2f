// Plain node, no loader: every entry point loads as ESM and as CommonJS.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const entries = ["@apikeys/client", "@apikeys/client/services", "@apikeys/client/express", "@apikeys/client/fastify", ...process.argv.slice(2)];
for (const entry of entries) {
  const esm = await import(entry);
  const cjs = require(entry);
  const names = Object.keys(esm).sort().join(",");
  if (names === "" || names !== Object.keys(cjs).sort().join(",")) throw new Error(`${entry}: ESM and CommonJS exports differ`);
  console.log(`ok - ${entry} loads with import and require (${Object.keys(esm).length} exports)`);
}
const { KeyVerifier, createApiKeysClients, registerPermissions, apiKeyAuth, VerifyCode } = require("@apikeys/client");
for (const [name, value] of Object.entries({ KeyVerifier, createApiKeysClients, registerPermissions, apiKeyAuth })) {
  if (typeof value !== "function") throw new Error(`require: ${name} is not a function`);
}
if (VerifyCode.DISABLED === undefined) throw new Error("require: VerifyCode lacks DISABLED");
