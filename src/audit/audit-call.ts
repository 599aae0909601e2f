import { randomUUID } from "node:crypto";
import { createContextKey } from "@connectrpc/connect";
import type { Transaction } from "kysely";
import type { AuditStageName, Database } from "../db/schema.js";
import { type NewAuditEvent, insertAuditEvent } from "./audit.repository.js";

/**
 * The audit state of one admin call, shared by the audit interceptors and the
 * handler: who called, what the request named, and whether the success event
 * was already committed with the change.
 */
export class AuditCall {
  readonly callId = randomUUID();
  actorKeyId: string | null = null;
  attemptWritten = false;
  successWritten = false;
  private readonly targetIds: Set<string>;

  constructor(
    readonly rpc: string,
    readonly request: Record<string, unknown>,
    targetIds: readonly string[],
  ) {
    this.targetIds = new Set(targetIds);
  }

  /** Adds ids the call resolved or created (e.g. a consumer named by username). */
  addTargets(ids: readonly string[]): void {
    for (const id of ids) this.targetIds.add(id);
  }

  /** The event of one stage of this call. */
  event(stage: AuditStageName, code = "", message = ""): NewAuditEvent {
    return {
      callId: this.callId,
      rpc: this.rpc,
      stage,
      actorKeyId: this.actorKeyId,
      targetIds: [...this.targetIds],
      request: this.request,
      code,
      message,
    };
  }

  /** Writes the success event inside the change's transaction, so both commit or neither. */
  async recordSuccess(tx: Transaction<Database>, targetIds: readonly string[]): Promise<void> {
    this.addTargets(targetIds);
    await insertAuditEvent(tx, this.event("success", "ok"));
    this.successWritten = true;
  }
}

/** The audit state of the current admin call; undefined outside the admin service. */
export const auditCall = createContextKey<AuditCall | undefined>(undefined, { description: "audit state of an admin call" });

/**
 * Records one completed change made outside the admin service (e.g. a leaked-token
 * report disabling a key) as a success event in the change's transaction.
 */
export function recordChange(
  tx: Transaction<Database>,
  change: { rpc: string; actorKeyId: string | null; targetIds: string[]; request: Record<string, unknown> },
): Promise<void> {
  return insertAuditEvent(tx, { ...change, callId: randomUUID(), stage: "success", code: "ok", message: "" });
}
