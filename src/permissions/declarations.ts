import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { getOption, hasOption } from "@bufbuild/protobuf";
import { type MethodAuth, auth, permissions } from "../gen/apikeys/v1/options_pb.js";
import { isValidPart, splitPermission } from "./permission-name.js";

/** A method's requirement, resolved from its `(apikeys.v1.auth)` option. */
export type MethodRequirement =
  | { kind: "public" }
  | { kind: "any_key" }
  | { kind: "permissions"; allOf: string[]; anyOf: string[] }
  | { kind: "undeclared" };

const requirements = new WeakMap<DescMethod, MethodRequirement>();

/** Reads (once per method) what a caller must present. */
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

/** The permissions each permission namespace declares across `services`, merged. */
export function declaredPermissions(
  services: readonly DescService[],
): Map<string, Array<{ name: string; description: string }>> {
  const byNamespace = new Map<string, Array<{ name: string; description: string }>>();
  for (const service of services) {
    if (!hasOption(service, permissions)) continue;
    const option = getOption(service, permissions);
    const list = byNamespace.get(option.service) ?? [];
    for (const p of option.permissions) {
      if (!list.some((q) => q.name === p.name)) list.push({ name: p.name, description: p.description });
    }
    byNamespace.set(option.service, list);
  }
  return byNamespace;
}

/**
 * Lists what is wrong with the services' auth options: an invalid declaration, a
 * method requiring a permission no listed service declares, or (unless allowed)
 * a method with no auth option. Empty when everything is consistent.
 */
export function checkAuthOptions(
  services: readonly DescService[],
  options: { allowUndeclaredMethods?: boolean } = {},
): string[] {
  const problems: string[] = [];
  const declared = new Set<string>();
  for (const [namespace, list] of declaredPermissions(services)) {
    if (!isValidPart(namespace)) problems.push(`permission namespace "${namespace}" must match [a-z][a-z0-9_.-]*`);
    for (const p of list) {
      if (!isValidPart(p.name)) problems.push(`permission "${namespace}:${p.name}" has an invalid name`);
      declared.add(`${namespace}:${p.name}`);
    }
  }
  for (const service of services) {
    for (const method of service.methods) {
      const requirement = methodRequirement(method);
      const where = `${service.typeName}.${method.name}`;
      if (requirement.kind === "undeclared") {
        if (!options.allowUndeclaredMethods) problems.push(`${where} has no (apikeys.v1.auth) option`);
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
