import { createHash } from "node:crypto";
import { type Expression, type RawBuilder, type SqlBool, sql } from "kysely";
import { invalidArgument } from "../errors.js";

/*
 * What the admin list RPCs share: the `filter` term syntax, `order_by`, and
 * keyset page tokens. A token names the row a page ended on by its sort value
 * and id, plus a digest of the query it belongs to, so it is opaque, stable
 * under inserts and deletes, and refused (invalid_argument) when forged or
 * replayed with another filter or order.
 */

const MAX_FILTER_LENGTH = 1000;
const MAX_FILTER_TERMS = 20;
const MAX_TOKEN_LENGTH = 2048;
const EARLIEST_MICROS = -210866803200000000n;

/** One term of a filter: `field:value`, or a bare value (field ""). */
export interface FilterTerm {
  field: string;
  value: string;
}

/**
 * Splits a filter into terms: whitespace-separated, each `field:value` or a bare
 * value, with "double quotes" around a value (or a bare term) that holds spaces.
 * `fields` are the ones allowed; any other is invalid_argument.
 */
export function parseFilter(filter: string, fields: readonly string[]): FilterTerm[] {
  if (filter.length > MAX_FILTER_LENGTH) throw invalidArgument(`filter must be at most ${MAX_FILTER_LENGTH} characters`);
  const terms: FilterTerm[] = [];
  const pattern = /\s*(?:([A-Za-z_]+):)?(?:"([^"]*)"|([^\s"]+))\s*/y;
  const rest = filter.trim();
  let index = 0;
  while (index < rest.length) {
    pattern.lastIndex = index;
    const match = pattern.exec(rest);
    if (match === null) throw invalidArgument(`filter has an unterminated quote or stray character at position ${index + 1}`);
    index = pattern.lastIndex;
    const field = (match[1] ?? "").toLowerCase();
    const value = match[2] ?? match[3] ?? "";
    if (field !== "" && !fields.includes(field)) {
      throw invalidArgument(`filter field "${field}" is not known; use ${fields.map((f) => `${f}:`).join(", ")} or a bare word`);
    }
    if (value === "") throw invalidArgument(`filter term ${field === "" ? '""' : `${field}:`} has no value`);
    terms.push({ field, value });
    if (terms.length > MAX_FILTER_TERMS) throw invalidArgument(`filter must have at most ${MAX_FILTER_TERMS} terms`);
  }
  return terms;
}

/** An ILIKE pattern matching `value` anywhere, with LIKE's wildcards escaped. */
export function containsPattern(value: string): string {
  return `%${value.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** A column a list may be ordered by. */
export interface SortColumn {
  /** The SQL expression sorted on. */
  expr: RawBuilder<unknown>;
  kind: "text" | "time";
  /** Rows where it is null sort after all others, in either direction. */
  nullable: boolean;
}

export interface Ordering<Name extends string> {
  name: Name;
  column: SortColumn;
  descending: boolean;
}

/** Parses `order_by`: one of `columns`' names, then optionally " desc" or " asc"; empty means `fallback`. */
export function parseOrderBy<Name extends string>(
  orderBy: string,
  columns: Record<Name, SortColumn>,
  fallback: Name,
): Ordering<Name> {
  const parts = orderBy.trim().split(/\s+/).filter((p) => p !== "");
  const names = Object.keys(columns) as Name[];
  if (parts.length === 0) return { name: fallback, column: columns[fallback], descending: false };
  const name = parts[0]!.toLowerCase() as Name;
  const direction = (parts[1] ?? "asc").toLowerCase();
  if (!names.includes(name) || parts.length > 2 || (direction !== "asc" && direction !== "desc")) {
    throw invalidArgument(`order_by must be one of ${names.join(", ")}, optionally followed by " desc"`);
  }
  return { name, column: columns[name], descending: direction === "desc" };
}

/** The sort value as a page token stores it: text as is, times as microseconds since the epoch. */
export function sortKeySelection(column: SortColumn): RawBuilder<string | null> {
  return column.kind === "time"
    ? sql<string | null>`(extract(epoch from ${column.expr}) * 1000000)::bigint::text`
    : sql<string | null>`${column.expr}::text`;
}

/** ORDER BY for an ordering, with `id` breaking ties. */
export function orderByClause(ordering: Ordering<string>, id: Expression<unknown>): RawBuilder<unknown> {
  const direction = ordering.descending ? sql`desc` : sql`asc`;
  return sql`${ordering.column.expr} ${direction} nulls last, ${id} ${direction}`;
}

/** Where a page token left off. */
export interface Cursor {
  value: string | null;
  id: string;
}

function sortValue(column: SortColumn, value: string): RawBuilder<unknown> {
  return column.kind === "time" ? sql`(timestamptz 'epoch' + ${value}::bigint * interval '1 microsecond')` : sql`${value}`;
}

/** The rows after `cursor` in `ordering` (nulls last, ties by id). */
export function afterCursor(ordering: Ordering<string>, cursor: Cursor, id: Expression<unknown>): RawBuilder<SqlBool> {
  const { column } = ordering;
  const beyond = ordering.descending ? sql`<` : sql`>`;
  if (cursor.value === null) return sql<SqlBool>`(${column.expr} is null and ${id} ${beyond} ${cursor.id})`;
  const value = sortValue(column, cursor.value);
  const later = sql<SqlBool>`(${column.expr} ${beyond} ${value} or (${column.expr} = ${value} and ${id} ${beyond} ${cursor.id}))`;
  return column.nullable ? sql<SqlBool>`(${later} or ${column.expr} is null)` : later;
}

/** A digest of everything that shapes a listing, so a token only continues the listing it came from. */
export function queryDigest(parts: readonly unknown[]): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("base64url").slice(0, 16);
}

export function encodePageToken(digest: string, cursor: Cursor): string {
  return Buffer.from(JSON.stringify([digest, cursor.value, cursor.id])).toString("base64url");
}

/**
 * Reads a page token back; invalid_argument unless it is well formed, came from
 * a listing with the same `digest`, and holds a value of the ordering's kind.
 */
export function decodePageToken(token: string, digest: string, column: SortColumn, isId: (id: string) => boolean): Cursor {
  const refuse = () => invalidArgument("page_token is not one this service issued for this filter and order");
  if (token.length > MAX_TOKEN_LENGTH || !/^[A-Za-z0-9_-]+$/.test(token)) throw refuse();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw refuse();
  }
  if (!Array.isArray(parsed) || parsed.length !== 3) throw refuse();
  const [tokenDigest, value, id] = parsed as unknown[];
  if (tokenDigest !== digest || typeof id !== "string" || !isId(id)) throw refuse();
  if (value === null) {
    if (!column.nullable) throw refuse();
    return { value: null, id };
  }
  if (typeof value !== "string") throw refuse();
  // Microseconds since the epoch, no earlier than timestamptz's first instant (4713 BC).
  if (column.kind === "time" && !(/^-?\d{1,18}$/.test(value) && BigInt(value) >= EARLIEST_MICROS)) throw refuse();
  if (column.kind === "text" && value.length > 1000) throw refuse();
  return { value, id };
}
