import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

/**
 * The shape of the server, enforced (docs/architecture.md): every import, type-only
 * ones included, points at the same layer or one below it, and no file imports
 * itself through others. The SDK package imports no server code.
 */

const ROOT = resolve(import.meta.dirname, "..");

/** Lowest first. A path belongs to the first entry whose prefix it starts with. */
const LAYERS: ReadonlyArray<{ name: string; paths: string[] }> = [
  { name: "gen", paths: ["src/gen/"] },
  { name: "core", paths: ["src/errors.ts", "src/validation.ts", "src/config.ts", "src/logger.ts", "src/tokens/"] },
  { name: "db", paths: ["src/db/", "src/listing/"] },
  { name: "domain", paths: ["src/auth/", "src/keys/", "src/policies/", "src/consumers/", "src/permissions/", "src/audit/", "src/jwt/", "src/usage/"] },
  { name: "verify", paths: ["src/verify/", "src/streams/"] },
  { name: "interceptors", paths: ["src/interceptors/"] },
  { name: "context", paths: ["src/context.ts"] },
  { name: "routes", paths: ["src/routes/", "src/http/", "src/transcoding/"] },
  { name: "server", paths: ["src/server.ts", "src/bootstrap.ts", "src/index.ts", "src/cli.ts", "src/migrate.ts"] },
];

function layerOf(path: string): number {
  return LAYERS.findIndex((layer) => layer.paths.some((p) => (p.endsWith("/") ? path.startsWith(p) : path === p)));
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = `${dir}/${name}`;
    if (statSync(join(ROOT, path)).isDirectory()) return sourceFiles(path);
    return path.endsWith(".ts") && !path.endsWith(".d.ts") ? [path] : [];
  });
}

/** Every relative import of a file (static, type-only, re-exports and dynamic), as repository paths. */
function importsOf(path: string): string[] {
  const { importedFiles } = ts.preProcessFile(readFileSync(join(ROOT, path), "utf8"), true, true);
  return importedFiles
    .map((f) => f.fileName)
    .filter((spec) => spec.startsWith("."))
    .map((spec) => relative(ROOT, resolve(ROOT, dirname(path), spec)).replace(/\.js$/, ".ts"));
}

/** The files on import cycles, one list per strongly connected group (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const stack: string[] = [];
  const state = new Map<string, { index: number; low: number; onStack: boolean }>();
  const groups: string[][] = [];
  const visit = (node: string) => {
    const s = { index, low: index, onStack: true };
    index++;
    state.set(node, s);
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next)) continue;
      const n = state.get(next);
      if (n === undefined) {
        visit(next);
        s.low = Math.min(s.low, state.get(next)!.low);
      } else if (n.onStack) {
        s.low = Math.min(s.low, n.index);
      }
    }
    if (s.low === s.index) {
      const group: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        state.get(member)!.onStack = false;
        group.push(member);
      } while (member !== node);
      if (group.length > 1 || (graph.get(node) ?? []).includes(node)) groups.push(group.sort());
    }
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return groups;
}

const serverFiles = sourceFiles("src");
const packageFiles = sourceFiles("packages/client/src");
const graph = new Map([...serverFiles, ...packageFiles].map((f) => [f, importsOf(f)]));

describe("architecture", () => {
  it("places every server file in a layer", () => {
    expect(serverFiles.filter((f) => layerOf(f) < 0)).toEqual([]);
  });

  it("has no import cycle in src/ or packages/client/src, type-only imports included", () => {
    expect(cycles(graph)).toEqual([]);
  });

  it("imports only from the same layer or below: gen → core → db → domain → verify → interceptors → context → routes → server", () => {
    const upward = serverFiles.flatMap((file) =>
      (graph.get(file) ?? [])
        .filter((target) => target.startsWith("src/") && layerOf(target) > layerOf(file))
        .map((target) => `${file} (${LAYERS[layerOf(file)]!.name}) imports ${target} (${LAYERS[layerOf(target)]!.name})`),
    );
    expect(upward).toEqual([]);
  });

  it("keeps Connect's errors out of the domain: services throw ApiError, the error interceptor maps it", () => {
    const domain = serverFiles.filter((f) => LAYERS[layerOf(f)]!.name === "domain");
    const offenders = domain.filter((f) => /\bnew ConnectError\(|\bCode\.[A-Z]/.test(readFileSync(join(ROOT, f), "utf8")));
    expect(offenders).toEqual([]);
  });

  it("keeps the SDK package free of server code", () => {
    const escaping = packageFiles.flatMap((file) =>
      (graph.get(file) ?? []).filter((target) => !target.startsWith("packages/client/")).map((target) => `${file} imports ${target}`),
    );
    expect(escaping).toEqual([]);
    const named = packageFiles.filter((f) => /from\s+["']apikeys(\/|["'])/.test(readFileSync(join(ROOT, f), "utf8")));
    expect(named).toEqual([]);
  });

  it("says at its top why a file runs past ~300 lines", () => {
    const long = [...serverFiles, ...packageFiles].filter((f) => !f.includes("/gen/")).filter((f) => {
      const text = readFileSync(join(ROOT, f), "utf8");
      return text.split("\n").length > 320 && !/^[\s\S]{0,600}Longer than 300 lines because/.test(text);
    });
    expect(long).toEqual([]);
  });

  it("finds the cycles and upward imports it is meant to catch", () => {
    const planted = new Map([
      ["src/a.ts", ["src/b.ts"]],
      ["src/b.ts", ["src/c.ts"]],
      ["src/c.ts", ["src/a.ts"]],
      ["src/d.ts", ["src/d.ts"]],
      ["src/e.ts", ["src/a.ts"]],
    ]);
    expect(cycles(planted)).toEqual([["src/a.ts", "src/b.ts", "src/c.ts"], ["src/d.ts"]]);
    expect(layerOf("src/db/write.ts")).toBeLessThan(layerOf("src/keys/key.service.ts"));
    expect(importsOf("src/db/write.ts")).toContain("src/db/invalidation.ts");
    // A type-only import counts like any other.
    expect(importsOf("src/context.ts")).toContain("src/config.ts");
  });
});
