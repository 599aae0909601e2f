import { ApiError } from "../errors.js";

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
 * What a database error means to the caller, by SQLSTATE (a unique violation
 * names its constraint; a lost connection is `DATABASE_UNAVAILABLE`); undefined
 * for an error that is not the database's to explain, which is then internal.
 */
export function databaseError(err: unknown): ApiError | undefined {
  if (err instanceof ApiError) return err;
  const pgErr = err as PgError | undefined;
  switch (pgErr?.code) {
    case "23505":
      return new ApiError("ALREADY_EXISTS", UNIQUE_MESSAGES[pgErr.constraint ?? ""] ?? "already exists", {
        metadata: pgErr.constraint === undefined ? {} : { constraint: pgErr.constraint },
      });
    case "23503":
      return new ApiError("FAILED_PRECONDITION", "a referenced record no longer exists");
    case "40001":
    case "40P01":
      return new ApiError("CONCURRENT_UPDATE", "concurrent update, retry");
    case "22001":
    case "22021":
    case "22P02":
    // NUL (\u0000) in a jsonb value: text that Postgres cannot store.
    case "22P05":
      return new ApiError("INVALID_REQUEST", "invalid value");
  }
  if (pgErr?.code && CONNECTION_ERRORS.has(pgErr.code)) return unavailable();
  const message = (err as Error | undefined)?.message ?? "";
  if (/timeout|Connection terminated|connect ECONNREFUSED/i.test(message)) return unavailable();
  return undefined;
}

function unavailable(): ApiError {
  return new ApiError("DATABASE_UNAVAILABLE", "database unavailable");
}
