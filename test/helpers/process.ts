import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The service running as its own process, as `npm start` runs it. */
export interface ServerProcess {
  child: ChildProcess;
  port: number;
  adminPort: number | undefined;
  /** Everything printed so far on stdout and stderr. */
  output(): string;
  /** Resolves with the exit code once the process ends. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Spawns `src/index.ts` with `env` and waits for its "apikeys listening" log line. */
export async function spawnServer(env: Record<string, string>, timeoutMs = 30_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/index.ts"], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", PORT: "0", HOST: "127.0.0.1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const ready = await new Promise<{ port: number; admin_port?: number } | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), timeoutMs);
    const check = () => {
      const line = out.split("\n").find((l) => l.includes('"apikeys listening"'));
      if (line) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as { port: number; admin_port?: number });
      }
    };
    child.stdout!.on("data", check);
    void exited.then(() => {
      clearTimeout(timer);
      resolve(undefined);
    });
  });
  if (ready === undefined) {
    child.kill("SIGKILL");
    throw new Error(`server did not start:\n${out}`);
  }
  return {
    child,
    port: ready.port,
    adminPort: ready.admin_port,
    output: () => out,
    exited,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs `src/index.ts` to completion (for start-up failures) and returns its exit code and output. */
export async function runServerToExit(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/index.ts"], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { code, output };
}
