import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import { authenticatedKey } from "../auth/auth-context.js";
import type { Database } from "../db/schema.js";
import { successRecorder } from "../db/write.js";
import { codeName } from "../errors.js";
import { isUuid } from "../validation.js";
import { toConnectError } from "./errors.js";
import { AuditCall, auditCall } from "../audit/audit-call.js";
import { boundedRequest, insertAuditEvent } from "../audit/audit.repository.js";

// Fields that may carry a credential are dropped from the recorded request, whatever the RPC.
const SECRET_FIELD = /token|secret|password/i;
// Request fields (JSON names) that name the records a call acts on; filters such as targetId are not targets.
const TARGET_FIELDS = new Set(["id", "policyId", "policyIds", "consumer"]);
// Ids taken from one request at most, so that, like the request itself, they cannot make an event unboundedly large.
const MAX_REQUEST_TARGETS = 100;

/**
 * The request as JSON with every credential-like field removed, recursively,
 * and a key's environment reduced to its variable names: its values are handed
 * to the key's holder and may well be credentials for other systems.
 */
export function redactRequest(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactRequest);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .filter(([k]) => !SECRET_FIELD.test(k))
        .map(([k, v]) => [k, k === "environment" ? redactValues(v) : redactRequest(v)]),
    );
  }
  return value;
}

function redactValues(value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return "[redacted]";
  return Object.fromEntries(Object.keys(value).map((k) => [k, "[redacted]"]));
}

function requestJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): Record<string, unknown> {
  try {
    return redactRequest(toJson(schema, message)) as Record<string, unknown>;
  } catch {
    // Some binary values (e.g. NaN in a Struct) have no JSON form; the call itself will be refused.
    return { unrecordable: "the request has no JSON form" };
  }
}

function requestTargets(json: Record<string, unknown>): string[] {
  const ids: string[] = [];
  for (const [field, value] of Object.entries(json)) {
    if (!TARGET_FIELDS.has(field)) continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      if (typeof v === "string" && isUuid(v)) ids.push(v.toLowerCase());
    }
  }
  return ids.slice(0, MAX_REQUEST_TARGETS);
}

/**
 * The audit log's two interceptors, installed on the admin service only. `outer` goes before
 * the auth interceptor: it sees every call, including ones auth refuses, and
 * writes the outcome. `inner` goes after it: it knows the actor and writes the
 * attempt before the handler runs; if that write fails the call does not run.
 */
export function auditInterceptors(
  db: Kysely<Database>,
  logger: Logger,
  requestMaxBytes: number,
): { outer: Interceptor; inner: Interceptor } {
  const outer: Interceptor = (next) => async (req) => {
    if (req.stream) return next(req);
    const json = requestJson(req.method.input, req.message);
    const call = new AuditCall(`${req.service.typeName}/${req.method.name}`, boundedRequest(json, requestMaxBytes), requestTargets(json));
    req.contextValues.set(auditCall, call);
    // The call's write (if any) records its success in the change's own transaction.
    req.contextValues.set(successRecorder, (tx, ids) => call.recordSuccess(tx, ids));
    let res;
    try {
      res = await next(req);
    } catch (err) {
      const error = toConnectError(err);
      try {
        if (!call.attemptWritten) {
          // Refused before the handler (authentication or permission): still an attempt.
          await insertAuditEvent(db, call.event("attempt"));
        }
        await insertAuditEvent(db, call.event("failure", codeName(error.code), error.rawMessage));
      } catch (writeErr) {
        logger.error({ err: (writeErr as Error).message, rpc: call.rpc, call_id: call.callId }, "could not write audit failure event");
      }
      throw error;
    }
    if (!call.successWritten) {
      try {
        await insertAuditEvent(db, call.event("success", "ok"));
      } catch (err) {
        throw toConnectError(err);
      }
    }
    return res;
  };

  const inner: Interceptor = (next) => async (req) => {
    const call = req.contextValues.get(auditCall);
    if (call === undefined) return next(req);
    call.actorKeyId = req.contextValues.get(authenticatedKey)?.id ?? null;
    try {
      await insertAuditEvent(db, call.event("attempt"));
    } catch (err) {
      throw toConnectError(err);
    }
    call.attemptWritten = true;
    return next(req);
  };
  return { outer, inner };
}
