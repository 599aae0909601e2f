#!/usr/bin/env node
// The service ships as TypeScript run by tsx, so the CLI registers tsx before loading it.
import { register } from "tsx/esm/api";

register();
const [command] = process.argv.slice(2);
if (command === "serve") {
  await import("../src/index.ts");
} else if (command === "migrate") {
  await import("../src/migrate.ts");
} else {
  const { runCli } = await import("../src/cli.ts");
  process.exitCode = await runCli(
    process.argv.slice(2),
    process.env,
    (text) => process.stdout.write(text),
    (text) => process.stderr.write(text),
  );
}
