import type { DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { ApiKeysService } from "./gen/apikeys/v1/api_keys_pb.js";
import type { Permission } from "./gen/apikeys/v1/resources_pb.js";
import { type PermissionDeclarations, checkAuthOptions, declaredPermissions } from "./requirements.js";

/** A service's auth options are inconsistent; the message names every problem. */
export class AuthOptionsError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid apikeys options: ${problems.join("; ")}`);
    this.name = "AuthOptionsError";
  }
}

export interface CheckOptions {
  /** Accept methods with no `(apikeys.v1.auth)` option; the interceptor still refuses every call to them. */
  allowUndeclaredMethods?: boolean | undefined;
}

/**
 * Fails fast when a method requires a permission nothing listed declares, a
 * declaration is malformed, or (unless allowed) a method has no auth option.
 */
export function assertAuthOptions(sources: ReadonlyArray<DescService | PermissionDeclarations>, options: CheckOptions = {}): void {
  const problems = checkAuthOptions(sources, options);
  if (problems.length > 0) throw new AuthOptionsError(problems);
}

/**
 * Checks the declarations (service descriptors with `(apikeys.v1.permissions)` options,
 * or plain `{ service, permissions }`), then declares the permissions to apikeys
 * (idempotent: run it at every start). Returns the permissions now registered.
 */
export async function registerPermissions(
  sources: ReadonlyArray<DescService | PermissionDeclarations>,
  client: Client<typeof ApiKeysService>,
  options: CheckOptions = {},
): Promise<Permission[]> {
  assertAuthOptions(sources, options);
  const registered: Permission[] = [];
  for (const [service, permissions] of declaredPermissions(sources)) {
    const response = await client.registerPermissions({ service, permissions });
    registered.push(...response.permissions);
  }
  return registered;
}
