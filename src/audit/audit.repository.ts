import { type Kysely, type Transaction, sql } from "kysely";
import type { AuditStageName, Database } from "../db/schema.js";

type Db = Kysely<Database> | Transaction<Database>;

/** One audit event as written. */
export interface NewAuditEvent {
  callId: string;
  rpc: string;
  stage: AuditStageName;
  actorKeyId: string | null;
  targetIds: readonly string[];
  request: Record<string, unknown>;
  code: string;
  message: string;
}

/** One audit event as read back. */
export interface AuditEventRow {
  id: string;
  callId: string;
  occurredOn: Date;
  rpc: string;
  stage: AuditStageName;
  actorKeyId: string | null;
  targetIds: string[];
  request: Record<string, unknown>;
  code: string;
  message: string;
}

/** Longest error message stored with an event, in characters; longer ones are cut and marked. */
export const MAX_AUDIT_MESSAGE_CHARS = 2_048;
const TRUNCATION_MARK = " …[truncated]";

// NUL, and UTF-16 halves without their other half: text Postgres cannot store (nor encode as UTF-8).
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `text` with every character Postgres cannot store replaced by U+FFFD, so a refusal is recorded whatever it names. */
export function storableText(text: string): string {
  return text.replace(UNSTORABLE, "\uFFFD");
}

function storableJson(value: unknown): unknown {
  if (typeof value === "string") return storableText(value);
  if (Array.isArray(value)) return value.map(storableJson);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [storableText(k), storableJson(v)]));
  }
  return value;
}

/**
 * The request as stored: whole when its JSON takes at most `maxBytes` (UTF-8),
 * else `{ truncated: true, originalBytes, prefix }` holding the first `maxBytes`
 * of that JSON text, so no request can make an event larger than that.
 */
export function boundedRequest(request: Record<string, unknown>, maxBytes: number): Record<string, unknown> {
  const storable = storableJson(request) as Record<string, unknown>;
  const text = JSON.stringify(storable);
  const bytes = Buffer.byteLength(text);
  if (bytes <= maxBytes) return storable;
  // Cut at a character boundary: a partial UTF-8 sequence at the end decodes as U+FFFD, dropped here.
  const prefix = storableText(Buffer.from(text.slice(0, maxBytes)).subarray(0, maxBytes).toString("utf8").replace(/\uFFFD$/, ""));
  return { truncated: true, originalBytes: bytes, prefix };
}

function boundedMessage(message: string): string {
  const text = storableText(message);
  return text.length <= MAX_AUDIT_MESSAGE_CHARS ? text : storableText(text.slice(0, MAX_AUDIT_MESSAGE_CHARS)) + TRUNCATION_MARK;
}

/**
 * Appends one event, inside the caller's transaction when given one. Text is
 * made storable here (see `storableText`); the request should already be
 * bounded by `boundedRequest`.
 */
export async function insertAuditEvent(db: Db, event: NewAuditEvent): Promise<void> {
  await db
    .insertInto("audit_events")
    .values({
      call_id: event.callId,
      rpc: storableText(event.rpc),
      stage: event.stage,
      actor_key_id: event.actorKeyId,
      target_ids: [...new Set(event.targetIds)],
      request: JSON.stringify(storableJson(event.request)),
      code: event.code,
      message: boundedMessage(event.message),
    })
    .execute();
}

/** What to list: newest first, strictly older than `beforeId` when given. */
export interface AuditFilter {
  limit: number;
  /** Requests stored larger than this (from before truncation on write) are read back truncated, by the database. */
  maxRequestBytes: number;
  beforeId?: string;
  targetId?: string;
  actorKeyId?: string;
  from?: Date;
  to?: Date;
}

/** A page of events, newest first. */
export async function listAuditEvents(db: Db, filter: AuditFilter): Promise<AuditEventRow[]> {
  let query = db
    .selectFrom("audit_events")
    .select([
      sql<string>`id::text`.as("id"),
      "call_id",
      "occurred_on",
      "rpc",
      "stage",
      "actor_key_id",
      "target_ids",
      // Bounded in the query, so no stored row, however large, is loaded whole into this process
      // (rows truncated on write are already bounded; escaping only makes their text form longer).
      sql<Record<string, unknown>>`case when request->>'truncated' = 'true' or octet_length(request::text) <= ${filter.maxRequestBytes} then request
        else jsonb_build_object('truncated', true, 'originalBytes', octet_length(request::text), 'prefix', left(request::text, ${filter.maxRequestBytes})) end`.as(
        "request",
      ),
      "code",
      sql<string>`left(message, ${MAX_AUDIT_MESSAGE_CHARS})`.as("message"),
    ])
    .orderBy("audit_events.id", "desc")
    .limit(filter.limit);
  if (filter.beforeId !== undefined) query = query.where("audit_events.id", "<", sql<string>`${filter.beforeId}::bigint`);
  if (filter.targetId !== undefined) query = query.where(sql<boolean>`target_ids @> array[${filter.targetId}::uuid]`);
  if (filter.actorKeyId !== undefined) query = query.where("actor_key_id", "=", filter.actorKeyId);
  if (filter.from !== undefined) query = query.where("occurred_on", ">=", filter.from);
  if (filter.to !== undefined) query = query.where("occurred_on", "<", filter.to);
  const rows = await query.execute();
  return rows.map((r) => ({
    id: r.id,
    callId: r.call_id,
    occurredOn: r.occurred_on,
    rpc: r.rpc,
    stage: r.stage,
    actorKeyId: r.actor_key_id,
    targetIds: r.target_ids,
    request: r.request,
    code: r.code,
    message: r.message,
  }));
}
