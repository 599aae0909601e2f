import { splitPermission } from "@apikeys/client";
import { invalidArgument } from "../errors.js";

// Permission names are validated the same way by the server and by @apikeys/client, which owns the rules.
export { isValidPart, splitPermission } from "@apikeys/client";

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
