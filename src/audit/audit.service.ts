import { create, type JsonObject } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { invalidArgument, requireTimeInRange, requireUuid, toConnectError } from "../errors.js";
import type { AdminGetAuditEventsRequest } from "../gen/apikeys/v1/admin_pb.js";
import { type AuditEvent, AuditEventSchema, AuditStage } from "../gen/apikeys/v1/audit_pb.js";
import { type AuditEventRow, listAuditEvents } from "./audit.repository.js";

const MAX_PAGE_SIZE = 1000;
const DEFAULT_PAGE_SIZE = 100;

const STAGES = { attempt: AuditStage.ATTEMPT, success: AuditStage.SUCCESS, failure: AuditStage.FAILURE } as const;

/** Maps a stored event to its message. */
export function toAuditEventMessage(row: AuditEventRow): AuditEvent {
  return create(AuditEventSchema, {
    id: row.id,
    callId: row.callId,
    time: timestampFromDate(row.occurredOn),
    rpc: row.rpc,
    stage: STAGES[row.stage],
    actorKeyId: row.actorKeyId ?? "",
    targetIds: row.targetIds,
    request: row.request as JsonObject,
    code: row.code,
    message: row.message,
  });
}

/** Largest audit event id: the top of Postgres' bigint. */
const MAX_EVENT_ID = 9_223_372_036_854_775_807n;

function decodePageToken(token: string): string {
  const id = Buffer.from(token, "base64url").toString("utf8");
  if (!/^[1-9]\d{0,18}$/.test(id) || BigInt(id) > MAX_EVENT_ID) throw invalidArgument("page_token is not one this service issued");
  return id;
}

function optionalTime(field: string, value: Timestamp | undefined): Date | undefined {
  return value === undefined ? undefined : requireTimeInRange(field, timestampDate(value));
}

/** Lists audit events newest first, paged, filtered by target, actor and time range. */
export async function getAuditEvents(
  db: Kysely<Database>,
  req: AdminGetAuditEventsRequest,
  maxRequestBytes: number,
): Promise<{ events: AuditEvent[]; nextPageToken: string }> {
  if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) {
    throw invalidArgument(`page_size must be between 0 and ${MAX_PAGE_SIZE}`);
  }
  const limit = req.pageSize || DEFAULT_PAGE_SIZE;
  const from = optionalTime("start_time", req.startTime);
  const to = optionalTime("end_time", req.endTime);
  if (from !== undefined && to !== undefined && from >= to) throw invalidArgument("start_time must be before end_time");
  const filter = {
    limit: limit + 1,
    maxRequestBytes,
    beforeId: req.pageToken === "" ? undefined : decodePageToken(req.pageToken),
    targetId: req.targetId === "" ? undefined : requireUuid("target_id", req.targetId),
    actorKeyId: req.actorKeyId === "" ? undefined : requireUuid("actor_key_id", req.actorKeyId),
    from,
    to,
  };
  try {
    const rows = await listAuditEvents(db, filter);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return {
      events: page.map(toAuditEventMessage),
      nextPageToken: rows.length > limit && last ? Buffer.from(last.id).toString("base64url") : "",
    };
  } catch (err) {
    throw toConnectError(err);
  }
}
