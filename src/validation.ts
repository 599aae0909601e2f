import type { FieldMask } from "@bufbuild/protobuf/wkt";
import { ApiError, invalidArgument } from "./errors.js";

/**
 * The checks every request field of one kind gets, one rule each: ids, display
 * names, descriptions, times, page sizes and update masks. Lengths count Unicode
 * code points (what a person calls characters), never UTF-16 units.
 */

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether a string is shaped like a UUID (any version, any case). */
export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}

/** Checks that an id field holds a UUID, naming the field otherwise; returns it lower-cased. */
export function requireUuid(field: string, value: string): string {
  if (value === "") throw invalidArgument(`${field} is required`);
  if (!UUID_PATTERN.test(value)) throw invalidArgument(`${field} must be a UUID, got "${value.slice(0, 64)}"`);
  return value.toLowerCase();
}

/** Checks a display name: 1 to 200 characters, no control characters, not blank, no surrounding spaces. */
export function requireName(field: string, value: string): string {
  if (value.trim() === "") throw invalidArgument(`${field} is required`);
  if ([...value].length > 200) throw invalidArgument(`${field} must be at most 200 characters`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalidArgument(`${field} must not contain control characters`);
  if (value !== value.trim()) throw invalidArgument(`${field} must not start or end with spaces`);
  return value;
}

/** Longest description of a key or a policy, in characters. */
export const MAX_DESCRIPTION = 2000;

/** Checks a description (of a key or a policy): at most 2000 characters, no NUL (which Postgres cannot store). */
export function requireDescription(value: string, field = "description"): string {
  if ([...value].length > MAX_DESCRIPTION) throw invalidArgument(`${field} must be at most ${MAX_DESCRIPTION} characters`);
  requireNoNul(field, value);
  return value;
}

/** Refuses NUL, which Postgres text cannot hold. */
export function requireNoNul(field: string, value: string): void {
  if (value.includes("\u0000")) throw invalidArgument(`${field} must not contain NUL characters`);
}

/** Largest page any list returns. */
export const MAX_PAGE_SIZE = 1000;
/** A list's page when page_size is 0 (policies: every one, see listPolicies). */
export const DEFAULT_PAGE_SIZE = 100;

/** Checks page_size (0 to 1000) and returns the rows to read: `pageSize`, or `fallback` when it is 0. */
export function requirePageSize<F extends number | undefined>(pageSize: number, fallback: F): number | F {
  if (pageSize < 0 || pageSize > MAX_PAGE_SIZE) throw invalidArgument(`page_size must be between 0 and ${MAX_PAGE_SIZE}`);
  return pageSize === 0 ? fallback : pageSize;
}

/** Earliest and latest instants accepted anywhere: years 1 to 9999, which every codec, Postgres and PGlite represent alike. */
const EARLIEST_MS = Date.parse("0001-01-01T00:00:00.000Z");
const LATEST_MS = Date.parse("9999-12-31T23:59:59.999Z");

/** Whether a date lies within years 1 to 9999. */
export function isWithinYears1To9999(date: Date): boolean {
  const ms = date.getTime();
  return ms >= EARLIEST_MS && ms <= LATEST_MS;
}

/** Checks a time given in a request, naming the field when it is outside years 1 to 9999. */
export function requireTimeInRange(field: string, date: Date): Date {
  if (!isWithinYears1To9999(date)) throw invalidArgument(`${field} must be a time between the years 1 and 9999`);
  return date;
}

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
    throw new ApiError("INVALID_UPDATE_MASK", `update_mask: unknown field${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}; allowed: ${allowed.join(", ")}`, {
      field: "update_mask",
      metadata: { paths: unknown.join(","), allowed: allowed.join(",") },
    });
  }
  return new Set(paths as F[]);
}
