import { type Transaction, sql } from "kysely";
import { INVALIDATION_CHANNEL } from "./database.js";
import type { Database } from "./schema.js";

/** What a write made stale: one key, or every key of one policy. */
export type Invalidation = { kind: "key"; id: string } | { kind: "policy"; id: string };

/**
 * Queues a NOTIFY in the writing transaction: delivered to every instance on commit, never on rollback.
 * `at` (epoch ms) lets receivers measure invalidation lag; parsers ignore it.
 */
export async function notifyInvalidation(tx: Transaction<Database>, event: Invalidation): Promise<void> {
  await sql`select pg_notify(${INVALIDATION_CHANNEL}, ${JSON.stringify({ ...event, at: Date.now() })})`.execute(tx);
}

/** Parses a NOTIFY payload; undefined when it is not one of ours. */
export function parseInvalidation(payload: string): Invalidation | undefined {
  try {
    const value = JSON.parse(payload) as { kind?: unknown; id?: unknown };
    if ((value.kind === "key" || value.kind === "policy") && typeof value.id === "string") {
      return { kind: value.kind, id: value.id };
    }
  } catch {
    // Not JSON: ignore.
  }
  return undefined;
}
