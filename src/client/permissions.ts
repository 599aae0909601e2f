import type { DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { ApiKeysService } from "../gen/apikeys/v1/api_keys_pb.js";
import type { Permission } from "../gen/apikeys/v1/resources_pb.js";
import { checkAuthOptions, declaredPermissions } from "../permissions/declarations.js";

/** A service's auth options are inconsistent; the message names every problem. */
export class AuthOptionsError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid apikeys options: ${problems.join("; ")}`);
    this.name = "AuthOptionsError";
  }
}

export interface CheckOptions {
  /** Accept methods with no `(apikeys.v1.auth)` option; the interceptor still refuses every call to them. */
  allowUndeclaredMethods?: boolean;
}

/**
 * Fails fast when a method requires a permission its services never declare,
 * a declaration is malformed, or (unless allowed) a method has no auth option.
 */
export function assertAuthOptions(services: readonly DescService[], options: CheckOptions = {}): void {
  const problems = checkAuthOptions(services, options);
  if (problems.length > 0) throw new AuthOptionsError(problems);
}

/**
 * Checks the services' options, then declares their permissions to apikeys
 * (idempotent: run it at every start). Returns the permissions now registered.
 */
export async function registerPermissions(
  services: readonly DescService[],
  client: Client<typeof ApiKeysService>,
  options: CheckOptions = {},
): Promise<Permission[]> {
  assertAuthOptions(services, options);
  const registered: Permission[] = [];
  for (const [service, permissions] of declaredPermissions(services)) {
    const response = await client.registerPermissions({ service, permissions });
    registered.push(...response.permissions);
  }
  return registered;
}
