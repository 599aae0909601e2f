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

/** What to list: newest first, strictly older than `beforeId` when given; every condition must hold. */
export interface AuditFilter {
  limit: number;
  /** Requests stored larger than this (from before truncation on write) are read back truncated, by the database. */
  maxRequestBytes: number;
  beforeId?: string;
  /** Only events naming one of these ids. */
  targetIds?: readonly string[];
  /** Only events of calls by one of these keys. */
  actorKeyIds?: readonly string[];
  from?: Date;
  to?: Date;
  /** Only events of these methods (fully qualified), or of every other method. */
  rpcs?: { names: readonly string[]; except: boolean };
  /** Only events of calls that ended so: "ok", "failed" (any error) or an error code name. */
  outcome?: string;
  /** One event per call (its outcome, or its attempt while it has none) instead of one per stage. */
  perCall: boolean;
}

/** One audit event as listed, with its call's attempt time in the per-call view. */
export interface ListedAuditEvent extends AuditEventRow {
  attemptOn: Date | null;
}

/** A page of events, newest first. */
export async function listAuditEvents(db: Db, filter: AuditFilter): Promise<ListedAuditEvent[]> {
  let query = db
    .selectFrom("audit_events as e")
    .select([
      sql<string>`e.id::text`.as("id"),
      "e.call_id",
      "e.occurred_on",
      "e.rpc",
      "e.stage",
      "e.actor_key_id",
      "e.target_ids",
      // Bounded in the query, so no stored row, however large, is loaded whole into this process
      // (rows truncated on write are already bounded; escaping only makes their text form longer).
      sql<Record<string, unknown>>`case when e.request->>'truncated' = 'true' or octet_length(e.request::text) <= ${filter.maxRequestBytes} then e.request
        else jsonb_build_object('truncated', true, 'originalBytes', octet_length(e.request::text), 'prefix', left(e.request::text, ${filter.maxRequestBytes})) end`.as(
        "request",
      ),
      "e.code",
      sql<string>`left(e.message, ${MAX_AUDIT_MESSAGE_CHARS})`.as("message"),
      (filter.perCall
        ? sql<Date | null>`case when e.stage = 'attempt' then e.occurred_on else
            (select a.occurred_on from audit_events a where a.call_id = e.call_id and a.stage = 'attempt' limit 1) end`
        : sql<Date | null>`null::timestamptz`
      ).as("attempt_on"),
    ])
    .orderBy("e.id", "desc")
    .limit(filter.limit);
  if (filter.beforeId !== undefined) query = query.where("e.id", "<", sql<string>`${filter.beforeId}::bigint`);
  if (filter.targetIds !== undefined) {
    query = query.where(sql<boolean>`e.target_ids && ${sql.val(filter.targetIds)}::uuid[]`);
  }
  if (filter.actorKeyIds !== undefined) {
    query = filter.actorKeyIds.length === 0 ? query.where(sql<boolean>`false`) : query.where("e.actor_key_id", "in", filter.actorKeyIds);
  }
  if (filter.from !== undefined) query = query.where("e.occurred_on", ">=", filter.from);
  if (filter.to !== undefined) query = query.where("e.occurred_on", "<", filter.to);
  if (filter.rpcs !== undefined) {
    const { names, except } = filter.rpcs;
    if (names.length === 0) query = except ? query : query.where(sql<boolean>`false`);
    else query = query.where("e.rpc", except ? "not in" : "in", names);
  }
  if (filter.perCall) {
    query = query.where(
      sql<boolean>`(e.stage <> 'attempt' or not exists
        (select 1 from audit_events o where o.call_id = e.call_id and o.stage <> 'attempt'))`,
    );
  }
  if (filter.outcome !== undefined) {
    const outcome =
      filter.outcome === "failed" ? sql<boolean>`o.stage = 'failure'` : sql<boolean>`o.code = ${filter.outcome}`;
    query = filter.perCall
      ? query.where(filter.outcome === "failed" ? sql<boolean>`e.stage = 'failure'` : sql<boolean>`e.code = ${filter.outcome}`)
      : query.where(sql<boolean>`exists (select 1 from audit_events o where o.call_id = e.call_id and ${outcome})`);
  }
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
    attemptOn: r.attempt_on,
  }));
}

/** Ids of the keys (live or deleted), policies and consumers a name or username names. */
export async function idsNamed(db: Db, name: string, kinds: { keys: boolean; others: boolean }): Promise<string[]> {
  const queries = [];
  if (kinds.keys) {
    queries.push(db.selectFrom("api_keys").select("id").where("name", "=", name));
    queries.push(db.selectFrom("deleted_api_keys").select("id").where("name", "=", name));
  }
  if (kinds.others) {
    queries.push(db.selectFrom("policies").select("id").where("name", "=", name));
    queries.push(db.selectFrom("consumers").select("id").where("username", "=", name));
  }
  const found = await Promise.all(queries.map((q) => q.execute()));
  return [...new Set(found.flat().map((r) => r.id))];
}

/** The names of whichever of these ids are keys (a deleted key keeps its last name), policies or consumers. */
export async function namesOf(db: Db, ids: readonly string[]): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  if (ids.length === 0) return names;
  const list = [...ids];
  const [deleted, keys, policies, consumers] = await Promise.all([
    db.selectFrom("deleted_api_keys").select(["id", "name"]).where("id", "in", list).execute(),
    db.selectFrom("api_keys").select(["id", "name"]).where("id", "in", list).execute(),
    db.selectFrom("policies").select(["id", "name"]).where("id", "in", list).execute(),
    db.selectFrom("consumers").select(["id", "username as name"]).where("id", "in", list).execute(),
  ]);
  // Live names win over a deleted key's remembered one.
  for (const row of [...deleted, ...keys, ...policies, ...consumers]) names.set(row.id, row.name);
  return names;
}
