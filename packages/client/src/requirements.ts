import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { getOption, hasOption } from "@bufbuild/protobuf";
import { type MethodAuth, auth, permissions } from "./gen/apikeys/v1/options_pb.js";

/** A method's requirement, resolved from its `(apikeys.v1.auth)` option. */
export type MethodRequirement =
  | { kind: "public" }
  | { kind: "any_key" }
  | { kind: "permissions"; allOf: string[]; anyOf: string[] }
  | { kind: "undeclared" };

/** A namespace's permissions declared without a proto, e.g. by an Express or Fastify service. */
export interface PermissionDeclarations {
  /** Permission namespace, `[a-z][a-z0-9_.-]*`. */
  service: string;
  permissions: ReadonlyArray<{ name: string; description: string }>;
}

const PART = /^[a-z][a-z0-9_.-]*$/;
const MAX_PART_LENGTH = 100;

/** True when `part` is a valid service or permission short name. */
export function isValidPart(part: string): boolean {
  return part.length <= MAX_PART_LENGTH && PART.test(part);
}

/** Splits a canonical "service:name" permission, or returns undefined when malformed. */
export function splitPermission(canonical: string): { service: string; name: string } | undefined {
  const colon = canonical.indexOf(":");
  if (colon < 0) return undefined;
  const service = canonical.slice(0, colon);
  const name = canonical.slice(colon + 1);
  return isValidPart(service) && isValidPart(name) ? { service, name } : undefined;
}

const requirements = new WeakMap<DescMethod, MethodRequirement>();

/**
 * Reads (once per method) what a caller must present. Options are read by
 * extension number, so descriptors generated from any copy of options.proto work.
 */
export function methodRequirement(method: DescMethod): MethodRequirement {
  let requirement = requirements.get(method);
  if (requirement === undefined) {
    requirement = hasOption(method, auth) ? fromOption(getOption(method, auth)) : { kind: "undeclared" };
    requirements.set(method, requirement);
  }
  return requirement;
}

function fromOption(option: MethodAuth): MethodRequirement {
  if (option.public) return { kind: "public" };
  if (option.allOf.length > 0 || option.anyOf.length > 0) {
    return { kind: "permissions", allOf: [...option.allOf], anyOf: [...option.anyOf] };
  }
  if (option.anyKey) return { kind: "any_key" };
  return { kind: "undeclared" };
}

function isDescService(source: DescService | PermissionDeclarations): source is DescService {
  return (source as DescService).kind === "service";
}

/**
 * The permissions each namespace declares across `sources` (services' `(apikeys.v1.permissions)`
 * options or plain declarations), merged.
 */
export function declaredPermissions(
  sources: ReadonlyArray<DescService | PermissionDeclarations>,
): Map<string, Array<{ name: string; description: string }>> {
  const byNamespace = new Map<string, Array<{ name: string; description: string }>>();
  for (const source of sources) {
    let declaration: PermissionDeclarations;
    if (isDescService(source)) {
      if (!hasOption(source, permissions)) continue;
      declaration = getOption(source, permissions);
    } else {
      declaration = source;
    }
    const list = byNamespace.get(declaration.service) ?? [];
    for (const p of declaration.permissions) {
      if (!list.some((q) => q.name === p.name)) list.push({ name: p.name, description: p.description });
    }
    byNamespace.set(declaration.service, list);
  }
  return byNamespace;
}

/**
 * Lists what is wrong with the declarations and the services' auth options: an
 * invalid name, a method requiring a permission nothing listed declares, or
 * (unless allowed) a method with no auth option. Empty when everything is consistent.
 */
export function checkAuthOptions(
  sources: ReadonlyArray<DescService | PermissionDeclarations>,
  options: { allowUndeclaredMethods?: boolean | undefined } = {},
): string[] {
  const problems: string[] = [];
  const declared = new Set<string>();
  for (const [namespace, list] of declaredPermissions(sources)) {
    if (!isValidPart(namespace)) problems.push(`permission namespace "${namespace}" must match [a-z][a-z0-9_.-]*`);
    for (const p of list) {
      if (!isValidPart(p.name)) problems.push(`permission "${namespace}:${p.name}" has an invalid name`);
      declared.add(`${namespace}:${p.name}`);
    }
  }
  for (const service of sources.filter(isDescService)) {
    for (const method of service.methods) {
      const requirement = methodRequirement(method);
      const where = `${service.typeName}.${method.name}`;
      if (requirement.kind === "undeclared") {
        if (options.allowUndeclaredMethods !== true) problems.push(`${where} has no (apikeys.v1.auth) option`);
        continue;
      }
      if (requirement.kind !== "permissions") continue;
      for (const name of [...requirement.allOf, ...requirement.anyOf]) {
        if (splitPermission(name) === undefined) problems.push(`${where} requires malformed permission "${name}"`);
        else if (!declared.has(name)) problems.push(`${where} requires "${name}", which no service declares`);
      }
    }
  }
  return problems;
}
