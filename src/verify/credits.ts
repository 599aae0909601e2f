import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";
import { type Refill, lastRefillBoundary } from "../keys/refill.js";

/** What spending a key's credits came to. */
export type CreditSpend =
  /** Spent (or, at cost 0, at least one was left): `remaining` after the spend. */
  | { kind: "spent"; remaining: number }
  /** Not enough left: nothing spent. */
  | { kind: "exceeded"; remaining: number }
  /** The key has no credits (any longer), or is gone: nothing to spend. */
  | { kind: "unlimited" };

/**
 * Spends `cost` credits of a key in one atomic statement, so instances sharing
 * the database never overspend: the row is changed only where enough are left
 * (`remaining >= cost`, at least 1 for cost 0), and the statement returns what
 * is left. A refill that is due (a boundary after the last one, computed from
 * `refill` at `now`) happens in the same statement, before the spend.
 */
export async function spendCredits(
  db: Kysely<Database>,
  keyId: string,
  cost: number,
  refill: Refill | null,
  now: number,
): Promise<CreditSpend> {
  const boundary = refill === null ? null : new Date(lastRefillBoundary(refill, now)).toISOString();
  // The credits the row holds once a due refill is applied.
  const due = sql`(refill_amount is not null and ${boundary}::timestamptz is not null
    and (refilled_at is null or refilled_at < ${boundary}::timestamptz))`;
  const available = sql`(case when ${due} then refill_amount else remaining end)`;
  const attempt = async (): Promise<CreditSpend | undefined> => {
    const spent = await sql<{ remaining: number | bigint }>`update api_keys
      set remaining = ${available} - ${cost}::bigint,
          refilled_at = case when ${due} then ${boundary}::timestamptz else refilled_at end
      where id = ${keyId}::uuid and remaining is not null and ${available} >= greatest(${cost}::bigint, 1)
      returning remaining`.execute(db);
    const row = spent.rows[0];
    return row === undefined ? undefined : { kind: "spent", remaining: Number(row.remaining) };
  };
  const leftOver = async (): Promise<number | null | undefined> => {
    // A refill that is due is no spend, so it is counted here but not written.
    const left = await sql<{ remaining: number | bigint | null }>`select ${available} as remaining
      from api_keys where id = ${keyId}::uuid`.execute(db);
    const remaining = left.rows[0]?.remaining;
    return remaining === undefined || remaining === null ? remaining : Number(remaining);
  };
  const first = await attempt();
  if (first !== undefined) return first;
  let remaining = await leftOver();
  // A top-up landed between the two statements: spend once more rather than refuse it.
  if (typeof remaining === "number" && remaining >= Math.max(cost, 1)) {
    const second = await attempt();
    if (second !== undefined) return second;
    remaining = await leftOver();
  }
  if (remaining === undefined || remaining === null) return { kind: "unlimited" };
  return { kind: "exceeded", remaining };
}
