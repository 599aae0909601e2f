import type { FieldMask } from "@bufbuild/protobuf/wkt";
import { apiError, invalidArgument } from "./errors.js";

/**
 * Resolves which fields an update touches: the mask's paths when given (each
 * must be one of `allowed`), else the fields the request sets (`present`).
 */
export function resolveUpdateMask<F extends string>(
  mask: FieldMask | undefined,
  allowed: readonly F[],
  present: readonly F[],
): Set<F> {
  const paths = mask?.paths ?? [];
  if (paths.length === 0) {
    if (present.length === 0) throw invalidArgument("nothing to update: set a field or update_mask");
    return new Set(present);
  }
  const unknown = paths.filter((p) => !(allowed as readonly string[]).includes(p));
  if (unknown.length > 0) {
    throw apiError("INVALID_UPDATE_MASK", `update_mask: unknown field${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}; allowed: ${allowed.join(", ")}`, {
      field: "update_mask",
      metadata: { paths: unknown.join(","), allowed: allowed.join(",") },
    });
  }
  return new Set(paths as F[]);
}
