import { Code, ConnectError } from "@connectrpc/connect";
import { MISSING_KEY, REFUSALS, lacksPermissions } from "./credentials.js";
import { type KeyVerifier, missingPermissions } from "./key-verifier.js";
import type { MethodRequirement } from "./requirements.js";
import type { VerifiedKey } from "./verification-cache.js";

/**
 * What every adapter does with a call: checks the caller's token against the
 * requirement. Returns the verified key (undefined for a public method) or throws
 * a ConnectError: `unauthenticated` (no, malformed or refused key),
 * `permission_denied` (key lacks a permission, or `what` has no access rule),
 * `unavailable` (apikeys cannot be asked and the token is not cached).
 */
export async function authorize(
  verifier: KeyVerifier,
  requirement: MethodRequirement,
  readToken: () => string | undefined,
  clientIp: string | undefined,
  what: string,
): Promise<VerifiedKey | undefined> {
  if (requirement.kind === "public") return undefined;
  if (requirement.kind === "undeclared") {
    // Fail closed: a method nobody classified is callable by nobody.
    throw new ConnectError(`${what} has no access rule`, Code.PermissionDenied);
  }
  const token = readToken();
  if (token === undefined) throw new ConnectError(MISSING_KEY, Code.Unauthenticated);
  const verdict = await verifier.verify(token, clientIp);
  if (!verdict.valid) throw new ConnectError(REFUSALS[verdict.code] ?? "invalid API key", Code.Unauthenticated);
  if (requirement.kind === "permissions") {
    const missing = missingPermissions(verdict.permissionSet, requirement.allOf, requirement.anyOf);
    if (missing.length > 0) throw new ConnectError(lacksPermissions(missing), Code.PermissionDenied);
  }
  return verdict.key;
}

/** A requirement given in code (Express, Fastify): any valid key unless permissions are listed. */
export function requirementOf(options: { allOf?: readonly string[] | undefined; anyOf?: readonly string[] | undefined }): MethodRequirement {
  const allOf = [...(options.allOf ?? [])];
  const anyOf = [...(options.anyOf ?? [])];
  return allOf.length > 0 || anyOf.length > 0 ? { kind: "permissions", allOf, anyOf } : { kind: "any_key" };
}

/** Node's socket address without the IPv4-mapped prefix dual-stack sockets add. */
export function plainAddress(address: string | undefined): string | undefined {
  return address?.startsWith("::ffff:") ? address.slice(7) : address;
}
