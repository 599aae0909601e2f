import type { JsonObject } from "@bufbuild/protobuf";
import { type Timestamp, durationMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { invalidArgument } from "../errors.js";
// Postgres refuses NUL in text and jsonb; requireNoNul catches it with a clear message.
import { requireNoNul } from "../validation.js";
import type { RateLimit as RateLimitMessage } from "../gen/apikeys/v1/resources_pb.js";
import { parseCidr } from "./cidr.js";
import type { RateLimit } from "./key-record.js";

/** What a new key admits when no CIDRs are given: any IPv4 and any IPv6 address. */
export const ANY_ORIGIN: readonly string[] = ["0.0.0.0/0", "::/0"];

const MAX_METADATA_ENTRIES = 64;
const MAX_METADATA_KEY = 128;
const MAX_METADATA_VALUE = 1024;
const MAX_CIDRS = 100;
const MAX_ENVIRONMENT_ENTRIES = 100;
const MAX_ENVIRONMENT_BYTES = 16 * 1024;
const ENVIRONMENT_NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,99}$/;
const MAX_RATE_REQUESTS = 1_000_000_000;
const MIN_RATE_PERIOD_MS = 1_000;
const MAX_RATE_PERIOD_MS = 24 * 3600 * 1000;
/** The last instant Postgres and the proto JSON mapping both represent. */
const MAX_EXPIRY = Date.parse("9999-12-31T23:59:59.999Z");

/** Checks metadata bounds: entry count and key/value lengths. */
export function requireMetadata(map: Readonly<Record<string, string>>): Record<string, string> {
  const entries = Object.entries(map);
  if (entries.length > MAX_METADATA_ENTRIES) throw invalidArgument(`metadata: at most ${MAX_METADATA_ENTRIES} entries`);
  for (const [key, value] of entries) {
    if (key === "" || [...key].length > MAX_METADATA_KEY) {
      throw invalidArgument(`metadata: keys must be 1 to ${MAX_METADATA_KEY} characters, got "${key.slice(0, 64)}"`);
    }
    if ([...value].length > MAX_METADATA_VALUE) {
      throw invalidArgument(`metadata["${key}"]: values must be at most ${MAX_METADATA_VALUE} characters`);
    }
    requireNoNul("metadata keys", key);
    requireNoNul(`metadata["${key}"]`, value);
  }
  return Object.fromEntries(entries);
}

/** Checks an expiry: unset means never; set, it must be in the future. */
export function requireExpiry(value: Timestamp | undefined, now = Date.now()): Date | null {
  if (value === undefined) return null;
  const date = timestampDate(value);
  if (Number.isNaN(date.getTime()) || date.getTime() > MAX_EXPIRY) throw invalidArgument("expires_on must be a time before the year 10000");
  if (date.getTime() <= now) throw invalidArgument(`expires_on must be in the future, got ${date.toISOString()}`);
  return date;
}

/** Checks and canonicalises CIDRs (bare addresses become /32 or /128), naming any invalid one. */
export function requireCidrs(cidrs: readonly string[]): string[] {
  if (cidrs.length > MAX_CIDRS) throw invalidArgument(`allowed_cidrs: at most ${MAX_CIDRS} CIDRs`);
  const invalid: string[] = [];
  const canonical: string[] = [];
  for (const text of cidrs) {
    const parsed = parseCidr(text.trim());
    if (parsed === undefined) invalid.push(`"${text.slice(0, 64)}"`);
    else if (!canonical.includes(parsed.text)) canonical.push(parsed.text);
  }
  if (invalid.length > 0) {
    throw invalidArgument(
      `allowed_cidrs: invalid CIDR${invalid.length > 1 ? "s" : ""} ${invalid.join(", ")} (expected e.g. "10.0.0.0/8" or "2001:db8::/32")`,
    );
  }
  return canonical;
}

/** Checks that an environment is flat: names are identifiers, values strings, numbers or booleans. */
export function requireEnvironment(value: JsonObject | undefined): Record<string, string | number | boolean> {
  if (value === undefined) return {};
  const entries = Object.entries(value);
  if (entries.length > MAX_ENVIRONMENT_ENTRIES) throw invalidArgument(`environment: at most ${MAX_ENVIRONMENT_ENTRIES} entries`);
  const flat: Record<string, string | number | boolean> = {};
  for (const [name, v] of entries) {
    if (!ENVIRONMENT_NAME.test(name)) {
      throw invalidArgument(`environment: name "${name.slice(0, 64)}" must match [A-Za-z_][A-Za-z0-9_-]* (at most 100 characters)`);
    }
    if (typeof v === "string") requireNoNul(`environment.${name}`, v);
    if (typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isFinite(v))) {
      flat[name] = v;
      continue;
    }
    const kind = v === null ? "null" : Array.isArray(v) ? "an array" : typeof v === "object" ? "an object" : "not a finite number";
    throw invalidArgument(`environment.${name} is ${kind}; values must be strings, numbers or booleans`);
  }
  if (Buffer.byteLength(JSON.stringify(flat)) > MAX_ENVIRONMENT_BYTES) {
    throw invalidArgument(`environment must be at most ${MAX_ENVIRONMENT_BYTES} bytes as JSON`);
  }
  return flat;
}

/** Checks a rate limit: unset means unlimited. */
export function requireRateLimit(value: RateLimitMessage | undefined): RateLimit | null {
  if (value === undefined) return null;
  if (!Number.isInteger(value.requests) || value.requests < 1 || value.requests > MAX_RATE_REQUESTS) {
    throw invalidArgument(`rate_limit.requests must be between 1 and ${MAX_RATE_REQUESTS}, got ${value.requests}`);
  }
  const periodMs = value.period === undefined ? 0 : durationMs(value.period);
  if (!(periodMs >= MIN_RATE_PERIOD_MS && periodMs <= MAX_RATE_PERIOD_MS)) {
    throw invalidArgument(
      `rate_limit.period must be between ${MIN_RATE_PERIOD_MS / 1000}s and ${MAX_RATE_PERIOD_MS / 1000}s, got ${periodMs / 1000}s`,
    );
  }
  return { requests: value.requests, periodMs: Math.round(periodMs) };
}
