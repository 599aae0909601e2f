import { splitPermission } from "@apikeys/client";
import { invalidArgument } from "../errors.js";

// Permission names are validated the same way by the server and by @apikeys/client, which owns the rules.
export { isValidPart, splitPermission } from "@apikeys/client";

/** Names found well-formed before (a small vocabulary in practice), so a repeated requirement is not split and matched again; bounded. */
const wellFormed = new Set<string>();
const WELL_FORMED_MAX = 10_000;

/**
 * Validates a list of canonical permission names for `field`, returning them
 * de-duplicated and sorted (the list itself when it already is, as clients nearly
 * always send it); names every malformed entry.
 */
export function requirePermissionNames(field: string, names: readonly string[]): readonly string[] {
  let canonical = true;
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (!wellFormed.has(name)) {
      if (splitPermission(name) === undefined) refuseMalformed(field, names);
      if (wellFormed.size >= WELL_FORMED_MAX) wellFormed.clear();
      wellFormed.add(name);
    }
    // Strictly ascending: sorted, and so without duplicates.
    if (i > 0 && !(names[i - 1]! < name)) canonical = false;
  }
  return canonical ? names : [...new Set(names)].sort();
}

function refuseMalformed(field: string, names: readonly string[]): never {
  const malformed = names.filter((n) => splitPermission(n) === undefined);
  const shown = malformed.slice(0, 10).map((n) => JSON.stringify(n.slice(0, 210)));
  throw invalidArgument(
    `${field}: malformed permission name${malformed.length > 1 ? "s" : ""} ${shown.join(", ")}; expected "service:name" with both parts matching [a-z][a-z0-9_.-]*`,
  );
}
