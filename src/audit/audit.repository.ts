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

/** Appends one event, inside the caller's transaction when given one. */
export async function insertAuditEvent(db: Db, event: NewAuditEvent): Promise<void> {
  await db
    .insertInto("audit_events")
    .values({
      call_id: event.callId,
      rpc: event.rpc,
      stage: event.stage,
      actor_key_id: event.actorKeyId,
      target_ids: [...new Set(event.targetIds)],
      request: JSON.stringify(event.request),
      code: event.code,
      message: event.message,
    })
    .execute();
}

/** What to list: newest first, strictly older than `beforeId` when given. */
export interface AuditFilter {
  limit: number;
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
      "request",
      "code",
      "message",
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
