import { invalidArgument } from "../errors.js";

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

/**
 * Validates a list of canonical permission names for `field`, returning them
 * de-duplicated and sorted; names every malformed entry.
 */
export function requirePermissionNames(field: string, names: readonly string[]): string[] {
  const malformed = names.filter((n) => splitPermission(n) === undefined);
  if (malformed.length > 0) {
    const shown = malformed.slice(0, 10).map((n) => JSON.stringify(n.slice(0, 210)));
    throw invalidArgument(
      `${field}: malformed permission name${malformed.length > 1 ? "s" : ""} ${shown.join(", ")}; expected "service:name" with both parts matching [a-z][a-z0-9_.-]*`,
    );
  }
  return [...new Set(names)].sort();
}
