import { CompiledQuery, type Kysely } from "kysely";
import type { PreparedQuery } from "../db/database.js";
import type { CredentialTypeName, Database, RefillIntervalName } from "../db/schema.js";
import type { KeyRecord } from "./key-record.js";
import { refillFromRow } from "./refill.js";

// The cold verification path when the cache is on: the key's own row by token hash, with
// its policy and consumer taken from the cache (they are shared by many keys), else read
// by id in a second query. The key row comes as one JSON array built by Postgres (no
// member names to send or parse): one JSON.parse costs a fraction of pg's per-column type
// parsers (Dates, arrays, jsonb). findKeyRecordByTokenHash (one join) stays the path when
// nothing can be cached; test/key-lookup.test.ts holds the two equal.

/**
 * A timestamp as UTC wall-clock time without an offset ("2026-12-02T12:59:45.791802"), read
 * by `utcDate` as what pg's own parser makes of it (milliseconds, the rest cut off). In UTC
 * whatever the session's TimeZone, so no historical offset (-04:56:02) that JS cannot parse;
 * and far cheaper in Postgres than epoch arithmetic, which is numeric since PG 14.
 */
const utc = (column: string) => `(${column} at time zone 'UTC')`;

/** The key row's fields, in the order of its JSON array. */
const KEY_FIELDS = {
  id: "k.id",
  name: "k.name",
  enabled: "k.enabled",
  start: "k.start",
  createdOn: utc("k.created_on"),
  updatedOn: utc("k.updated_on"),
  lastUsedOn: utc("k.last_used_on"),
  createdBy: "k.created_by",
  description: "k.description",
  metadata: "k.metadata",
  expiresOn: utc("k.expires_on"),
  allowedCidrs: "k.allowed_cidrs",
  environment: "k.environment",
  rateLimitRequests: "k.rate_limit_requests",
  rateLimitPeriodMs: "k.rate_limit_period_ms",
  credentialType: "k.credential_type",
  remaining: "k.remaining",
  refillAmount: "k.refill_amount",
  refillInterval: "k.refill_interval",
  refillPeriodMs: "k.refill_period_ms",
  refillDay: "k.refill_day",
  refillAnchor: utc("k.refill_anchor"),
  policyId: "k.policy_id",
  consumerId: "k.consumer_id",
  // The previous token only while it still works.
  previousStart: "case when k.previous_token_expires_on > now() then coalesce(k.previous_start, '') end",
  previousExpiresOn: `case when k.previous_token_expires_on > now() then ${utc("k.previous_token_expires_on")} end`,
  // Set by the read of a previous token (KEY_BY_PREVIOUS_TOKEN_HASH): when its grace ends.
  graceEndsOn: "null",
} as const;

/** Where each field is in the array. */
const F = Object.fromEntries(Object.keys(KEY_FIELDS).map((name, i) => [name, i])) as { readonly [K in keyof typeof KEY_FIELDS]: number };

// A current token, then (found nothing) a previous one in its grace: two statements, not one
// with `or`, because the `or` makes Postgres open both indexes and merge two bitmap scans on
// every lookup (about a twentieth of the cold path), while a token matches a previous hash
// only during a rotation's grace period. Unknown tokens take both reads.
const KEY_BY_TOKEN_HASH = `select json_build_array(${Object.values(KEY_FIELDS).join(", ")})::text as json
  from api_keys k where k.token_hash = $1`;

const KEY_BY_PREVIOUS_TOKEN_HASH = `select json_build_array(${Object.values({ ...KEY_FIELDS, graceEndsOn: utc("k.previous_token_expires_on") }).join(", ")})::text as json
  from api_keys k where k.previous_token_hash = $1 and k.previous_token_expires_on > now()`;

const POLICY_WITH_CONSUMER = `select json_build_object(
    'id', p.id, 'name', p.name, 'description', p.description, 'created_on', ${utc("p.created_on")},
    'updated_on', ${utc("p.updated_on")}, 'created_by', p.created_by,
    'permissions', coalesce((select array_agg(pp.permission order by pp.permission) from policy_permissions pp where pp.policy_id = p.id), '{}'),
    'consumer_username', (select c.username from consumers c where c.id = $2::uuid)
  )::text as json
  from policies p where p.id = $1::uuid`;

/** A key's row as a token lookup read it; `keyRecord` makes it a record once its policy and consumer are known. */
export interface KeyRow {
  /** Postgres's JSON array of KEY_FIELDS: timestamps as UTC text without an offset, bigints as numbers (credits stay below 2^53). */
  fields: unknown[];
  policyId: string;
  consumerId: string | null;
  /** Set when the token is the key's previous one: when its grace period ends. */
  graceEndsOn: Date | null;
}

/** A policy with its sorted permissions, and the username of a consumer read with it. */
export interface PolicyRead {
  policy: KeyRecord["policy"];
  /** Undefined when no consumer was asked for; null when it is gone. */
  consumerUsername: string | null | undefined;
}

/**
 * The rows of one JSON-column query: a named prepared statement on Postgres, a raw query on
 * PGlite. Not async, so the Postgres path hands back the pool's own promise (no extra turn
 * of the event loop on the cold path).
 */
function queryJson(db: Kysely<Database>, prepared: PreparedQuery | undefined, name: string, text: string, values: unknown[]): Promise<Array<{ json: string }>> {
  return prepared === undefined
    ? db.executeQuery<{ json: string }>(CompiledQuery.raw(text, values)).then((result) => result.rows)
    : prepared<{ json: string }>(name, text, values);
}

/**
 * The key a token hash belongs to, without its policy or consumer: its current token,
 * or its previous one while the rotation grace lasts (`graceEndsOn` set).
 */
export async function findKeyRowByTokenHash(db: Kysely<Database>, hash: Uint8Array, prepared?: PreparedQuery): Promise<KeyRow | undefined> {
  let rows = await queryJson(db, prepared, "apikeys_key_row_by_token_hash", KEY_BY_TOKEN_HASH, [hash]);
  if (rows.length === 0) rows = await queryJson(db, prepared, "apikeys_key_row_by_previous_token_hash", KEY_BY_PREVIOUS_TOKEN_HASH, [hash]);
  if (rows.length === 0) return undefined;
  const fields = JSON.parse(rows[0]!.json) as unknown[];
  return {
    fields,
    policyId: fields[F.policyId] as string,
    consumerId: fields[F.consumerId] as string | null,
    graceEndsOn: date(fields[F.graceEndsOn]),
  };
}

/** The record of a key row with its policy and consumer, built in one literal (a spread of the row would cost more than its parse). */
export function keyRecord(row: KeyRow, policy: KeyRecord["policy"], consumer: KeyRecord["consumer"]): KeyRecord {
  const f = row.fields;
  const rateLimitRequests = f[F.rateLimitRequests] as number | null;
  const rateLimitPeriodMs = f[F.rateLimitPeriodMs] as number | null;
  const refillAmount = f[F.refillAmount] as number | null;
  const previousStart = f[F.previousStart] as string | null;
  const previousExpiresOn = f[F.previousExpiresOn] as string | null;
  return {
    id: f[F.id] as string,
    name: f[F.name] as string,
    enabled: f[F.enabled] as boolean,
    start: f[F.start] as string,
    createdOn: utcDate(f[F.createdOn] as string),
    updatedOn: utcDate(f[F.updatedOn] as string),
    lastUsedOn: date(f[F.lastUsedOn]),
    createdBy: f[F.createdBy] as string | null,
    description: f[F.description] as string,
    metadata: f[F.metadata] as Record<string, string>,
    expiresOn: date(f[F.expiresOn]),
    allowedCidrs: f[F.allowedCidrs] as string[],
    environment: f[F.environment] as Record<string, string | number | boolean>,
    rateLimit: rateLimitRequests !== null && rateLimitPeriodMs !== null ? { requests: rateLimitRequests, periodMs: rateLimitPeriodMs } : null,
    credentialType: f[F.credentialType] as CredentialTypeName,
    remaining: f[F.remaining] as number | null,
    refill:
      refillAmount === null
        ? null
        : refillFromRow({
            refill_amount: refillAmount,
            refill_interval: f[F.refillInterval] as RefillIntervalName | null,
            refill_period_ms: f[F.refillPeriodMs] as number | null,
            refill_day: f[F.refillDay] as number | null,
            refill_anchor: date(f[F.refillAnchor]),
          }),
    previousToken: previousStart !== null && previousExpiresOn !== null ? { start: previousStart, expiresOn: utcDate(previousExpiresOn) } : null,
    consumer,
    policy,
  };
}

/** A policy by id with its permissions, and (when `consumerId` is given) that consumer's username. */
export async function findPolicyWithConsumer(
  db: Kysely<Database>,
  policyId: string,
  consumerId: string | null,
  prepared?: PreparedQuery,
): Promise<PolicyRead | undefined> {
  const rows = await queryJson(db, prepared, "apikeys_policy_with_consumer", POLICY_WITH_CONSUMER, [policyId, consumerId]);
  if (rows.length === 0) return undefined;
  const row = JSON.parse(rows[0]!.json) as PolicyJson;
  return {
    policy: {
      id: row.id,
      name: row.name,
      description: row.description,
      createdOn: utcDate(row.created_on),
      updatedOn: utcDate(row.updated_on),
      createdBy: row.created_by,
      permissions: row.permissions,
    },
    consumerUsername: consumerId === null ? undefined : row.consumer_username,
  };
}

function date(value: unknown): Date | null {
  return value === null ? null : utcDate(value as string);
}

/** A UTC timestamp of `utc`'s form as a Date (ISO 8601 with "Z"; digits past the millisecond are cut off, as pg's parser does). */
function utcDate(text: string): Date {
  return new Date(`${text}Z`);
}

interface PolicyJson {
  id: string;
  name: string;
  description: string;
  created_on: string;
  updated_on: string;
  created_by: string | null;
  permissions: string[];
  consumer_username: string | null;
}
