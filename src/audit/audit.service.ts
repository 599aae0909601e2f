import { create, type JsonObject } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { databaseError } from "../db/database-errors.js";
import { codeName, invalidArgument } from "../errors.js";
import { DEFAULT_PAGE_SIZE, isUuid, requirePageSize, requireTimeInRange, requireUuid } from "../validation.js";
import { type AdminGetAuditEventsRequest, ApiKeysAdminService, AuditCallKind, AuditEventView } from "../gen/apikeys/v1/admin_pb.js";
import { ApiKeysService } from "../gen/apikeys/v1/api_keys_pb.js";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { type AuditEvent, AuditEventSchema, AuditStage } from "../gen/apikeys/v1/audit_pb.js";
import { type AuditEventRow, type AuditFilter, idsNamed, listAuditEvents, namesOf } from "./audit.repository.js";

const MAX_BIGINT = 9223372036854775807n;

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

function decodePageToken(token: string): string {
  const id = Buffer.from(token, "base64url").toString("utf8");
  if (!/^[1-9]\d{0,18}$/.test(id) || BigInt(id) > MAX_BIGINT) throw invalidArgument("page_token is not one this service issued");
  return id;
}

function optionalTime(field: string, value: Timestamp | undefined): Date | undefined {
  return value === undefined ? undefined : requireTimeInRange(field, timestampDate(value));
}

// Methods without side effects are reads; every other audited call may change something.
const ADMIN_RPCS = ApiKeysAdminService.methods.map((m) => ({
  name: m.name,
  rpc: `${ApiKeysAdminService.typeName}/${m.name}`,
  read: m.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
}));
const READ_RPCS = ADMIN_RPCS.filter((m) => m.read).map((m) => m.rpc);
const KNOWN_RPCS = [...ADMIN_RPCS, ...ApiKeysService.methods.map((m) => ({ name: m.name, rpc: `${ApiKeysService.typeName}/${m.name}` }))];
const MAX_REF = 200;
const ERROR_CODES = Object.values(Code).filter((c): c is Code => typeof c === "number").map(codeName);

function requireMethod(value: string): string {
  const found = KNOWN_RPCS.find((m) => m.rpc === value || m.name === value);
  if (found === undefined) throw invalidArgument(`method "${value.slice(0, MAX_REF)}" is not an audited method`);
  return found.rpc;
}

function requireOutcome(value: string): string {
  const outcome = value.trim().toLowerCase();
  if (outcome === "ok" || outcome === "failed") return outcome;
  if (!ERROR_CODES.includes(outcome)) {
    throw invalidArgument(`outcome must be "ok", "failed" or an error code name (${ERROR_CODES.join(", ")})`);
  }
  return outcome;
}

function requireRef(field: string, value: string): string {
  const ref = value.trim();
  if (ref.length > MAX_REF) throw invalidArgument(`${field} must be at most ${MAX_REF} characters`);
  return ref;
}

/**
 * Lists audit events newest first, paged, filtered by target, actor, method,
 * write or read, outcome and time range; per stage or per call (see
 * AdminGetAuditEventsRequest), with the names of the ids the page mentions.
 */
export async function getAuditEvents(
  db: Kysely<Database>,
  req: AdminGetAuditEventsRequest,
  maxRequestBytes: number,
): Promise<{ events: AuditEvent[]; nextPageToken: string; names: Record<string, string> }> {
  const limit = requirePageSize(req.pageSize, DEFAULT_PAGE_SIZE);
  const from = optionalTime("start_time", req.startTime);
  const to = optionalTime("end_time", req.endTime);
  if (from !== undefined && to !== undefined && from >= to) throw invalidArgument("start_time must be before end_time");
  if (!(req.kind in AuditCallKind)) throw invalidArgument(`kind ${req.kind} is not known`);
  if (!(req.view in AuditEventView)) throw invalidArgument(`view ${req.view} is not known`);
  const method = req.method === "" ? undefined : requireMethod(req.method.trim());
  let rpcs: { names: readonly string[]; except: boolean } | undefined;
  if (req.kind === AuditCallKind.READ) rpcs = { names: READ_RPCS, except: false };
  if (req.kind === AuditCallKind.WRITE) rpcs = { names: READ_RPCS, except: true };
  if (method !== undefined) {
    const included = rpcs === undefined || rpcs.names.includes(method) !== rpcs.except;
    rpcs = { names: included ? [method] : [], except: false };
  }
  const target = requireRef("target", req.target);
  const actor = requireRef("actor", req.actor);
  const base = {
    limit: limit + 1,
    maxRequestBytes,
    beforeId: req.pageToken === "" ? undefined : decodePageToken(req.pageToken),
    targetId: req.targetId === "" ? undefined : requireUuid("target_id", req.targetId),
    actorKeyId: req.actorKeyId === "" ? undefined : requireUuid("actor_key_id", req.actorKeyId),
    from,
    to,
    rpcs,
    outcome: req.outcome === "" ? undefined : requireOutcome(req.outcome),
    perCall: req.view === AuditEventView.CALLS,
  };
  try {
    const targetIds = [
      ...(base.targetId === undefined ? [] : [[base.targetId]]),
      ...(target === "" ? [] : [isUuid(target) ? [target.toLowerCase()] : await idsNamed(db, target, { keys: true, others: true })]),
    ];
    const actorIds = [
      ...(base.actorKeyId === undefined ? [] : [[base.actorKeyId]]),
      ...(actor === "" ? [] : [isUuid(actor) ? [actor.toLowerCase()] : await idsNamed(db, actor, { keys: true, others: false })]),
    ];
    const filter: AuditFilter = {
      ...base,
      targetIds: intersect(targetIds),
      actorKeyIds: intersect(actorIds),
    };
    const rows = await listAuditEvents(db, filter);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    const mentioned = new Set(page.flatMap((r) => [...r.targetIds, ...(r.actorKeyId === null ? [] : [r.actorKeyId])]));
    return {
      events: page.map((row) => {
        const event = toAuditEventMessage(row);
        if (row.attemptOn !== null) event.attemptTime = timestampFromDate(row.attemptOn);
        return event;
      }),
      nextPageToken: rows.length > limit && last ? Buffer.from(last.id).toString("base64url") : "",
      names: Object.fromEntries(await namesOf(db, [...mentioned])),
    };
  } catch (err) {
    throw databaseError(err) ?? err;
  }
}

/** Ids in every one of the lists; undefined when there are no lists (no condition). */
function intersect(lists: readonly string[][]): string[] | undefined {
  if (lists.length === 0) return undefined;
  return lists.reduce((acc, list) => acc.filter((id) => list.includes(id)));
}
