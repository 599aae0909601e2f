import { Code, ConnectError } from "@connectrpc/connect";

/** Names the constraint behind each unique violation, for a clear message. */
const UNIQUE_MESSAGES: Record<string, string> = {
  policies_name_key: "a policy with this name already exists",
  api_keys_name_key: "an API key with this name already exists",
  consumers_username_key: "a consumer with this username already exists",
};

interface PgError {
  code?: string;
  constraint?: string;
  message?: string;
}

const CONNECTION_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004"]);

/**
 * Maps any error thrown below a handler to a ConnectError: database errors by
 * SQLSTATE, ConnectErrors unchanged, everything else `internal` with no detail.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const pgErr = err as PgError;
  switch (pgErr?.code) {
    case "23505":
      return new ConnectError(UNIQUE_MESSAGES[pgErr.constraint ?? ""] ?? "already exists", Code.AlreadyExists);
    case "23503":
      return new ConnectError("a referenced record no longer exists", Code.FailedPrecondition);
    case "40001":
    case "40P01":
      return new ConnectError("concurrent update, retry", Code.Aborted);
    case "22001":
    case "22021":
    case "22P02":
    // NUL (\u0000) in a jsonb value: text that Postgres cannot store.
    case "22P05":
      return new ConnectError("invalid value", Code.InvalidArgument);
  }
  if (pgErr?.code && CONNECTION_ERRORS.has(pgErr.code)) {
    return new ConnectError("database unavailable", Code.Unavailable);
  }
  const message = (err as Error)?.message ?? "";
  if (/timeout|Connection terminated|connect ECONNREFUSED/i.test(message)) {
    return new ConnectError("database unavailable", Code.Unavailable);
  }
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

/** Runs database work, turning whatever it throws into a ConnectError (see toConnectError). */
export async function withConnectErrors<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw toConnectError(err);
  }
}

/** Shorthand for an invalid_argument error. */
export function invalidArgument(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** Shorthand for a not_found error. */
export function notFound(message: string): ConnectError {
  return new ConnectError(message, Code.NotFound);
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether a string is shaped like a UUID (any version, any case). */
export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}

/** Checks that an id field holds a UUID, naming the field otherwise. */
export function requireUuid(field: string, value: string): string {
  if (value === "") throw invalidArgument(`${field} is required`);
  if (!UUID_PATTERN.test(value)) throw invalidArgument(`${field} must be a UUID, got "${value.slice(0, 64)}"`);
  return value.toLowerCase();
}

/** Checks a display name: 1 to 200 characters, no control characters, not blank. */
export function requireName(field: string, value: string): string {
  if (value.trim() === "") throw invalidArgument(`${field} is required`);
  if ([...value].length > 200) throw invalidArgument(`${field} must be at most 200 characters`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalidArgument(`${field} must not contain control characters`);
  if (value !== value.trim()) throw invalidArgument(`${field} must not start or end with spaces`);
  return value;
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
