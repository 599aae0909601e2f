import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ApiKeyRow, RefillIntervalName } from "../db/schema.js";
import { invalidArgument } from "../errors.js";
import { type Refill as RefillMessage, RefillInterval, RefillSchema } from "../gen/apikeys/v1/resources_pb.js";

/** A key's refill as the verifier uses it: credits are set back to `amount` at each boundary. */
export interface Refill {
  amount: number;
  interval: RefillIntervalName;
  /** For "period". */
  periodMs: number | null;
  /** For "monthly": day of the month, 1 to 31. */
  day: number | null;
  /** For "period": the first boundary. */
  anchor: Date | null;
}

/** Most credits a key may hold or be refilled to. */
export const MAX_CREDITS = 1_000_000_000_000;
/** Highest cost one verification may spend. */
export const MAX_COST = 1_000_000_000;
const MIN_REFILL_PERIOD_MS = 60_000;
const MAX_REFILL_PERIOD_MS = 366 * 86_400_000;
const DAY_MS = 86_400_000;

/**
 * The latest refill boundary at or before `now` (epoch ms): 00:00 UTC of today
 * (daily), of this month's refill day (monthly; clamped to the month's last
 * day), or anchor + n * period. A verification after a boundary later than the
 * key's last refill sets its credits back to the amount first.
 */
export function lastRefillBoundary(refill: Refill, now: number): number {
  switch (refill.interval) {
    case "daily":
      return Math.floor(now / DAY_MS) * DAY_MS;
    case "monthly": {
      const date = new Date(now);
      const day = refill.day ?? 1;
      const thisMonth = monthDay(date.getUTCFullYear(), date.getUTCMonth(), day);
      return thisMonth <= now ? thisMonth : monthDay(date.getUTCFullYear(), date.getUTCMonth() - 1, day);
    }
    case "period": {
      const anchor = refill.anchor?.getTime() ?? 0;
      const period = refill.periodMs ?? DAY_MS;
      // Before the anchor, the anchor's period back counts (an anchor in the future starts counting there).
      return anchor + Math.floor((now - anchor) / period) * period;
    }
  }
}

/** 00:00 UTC of `day` in the given month (month may be -1: December of the year before), clamped to its last day. */
function monthDay(year: number, month: number, day: number): number {
  const last = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  return Date.UTC(year, month, Math.min(day, last));
}

/** Validates a request's credits: an integer from 0 to MAX_CREDITS, or undefined. */
export function requireRemaining(value: bigint | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (value < 0n || value > BigInt(MAX_CREDITS)) {
    throw invalidArgument(`remaining must be between 0 and ${MAX_CREDITS}, got ${value}`);
  }
  return Number(value);
}

/** Validates a request's cost: unset means 1. */
export function requireCost(value: bigint | undefined): number {
  if (value === undefined) return 1;
  if (value < 0n || value > BigInt(MAX_COST)) throw invalidArgument(`cost must be between 0 and ${MAX_COST}, got ${value}`);
  return Number(value);
}

/** Validates a request's refill; `now` anchors a period refill given without an anchor. */
export function requireRefill(value: RefillMessage | undefined, now: number): Refill | null {
  if (value === undefined) return null;
  if (value.amount < 1n || value.amount > BigInt(MAX_CREDITS)) {
    throw invalidArgument(`refill.amount must be between 1 and ${MAX_CREDITS}, got ${value.amount}`);
  }
  const amount = Number(value.amount);
  const hasInterval = value.interval !== RefillInterval.UNSPECIFIED;
  if (hasInterval === (value.period !== undefined)) {
    throw invalidArgument("refill must set exactly one of interval (REFILL_INTERVAL_DAILY, REFILL_INTERVAL_MONTHLY) and period");
  }
  if (value.day !== 0 && value.interval !== RefillInterval.MONTHLY) {
    throw invalidArgument("refill.day must be 0 unless interval is REFILL_INTERVAL_MONTHLY");
  }
  if (value.anchor !== undefined && value.period === undefined) throw invalidArgument("refill.anchor must be unset unless period is set");
  if (value.period !== undefined) {
    const periodMs = durationMs(value.period);
    if (!(periodMs >= MIN_REFILL_PERIOD_MS && periodMs <= MAX_REFILL_PERIOD_MS && Number.isInteger(periodMs))) {
      throw invalidArgument(
        `refill.period must be a whole number of milliseconds between ${MIN_REFILL_PERIOD_MS / 1000}s and ${MAX_REFILL_PERIOD_MS / 1000}s`,
      );
    }
    const anchor = value.anchor === undefined ? new Date(now) : timestampDate(value.anchor);
    return { amount, interval: "period", periodMs, day: null, anchor };
  }
  switch (value.interval) {
    case RefillInterval.DAILY:
      return { amount, interval: "daily", periodMs: null, day: null, anchor: null };
    case RefillInterval.MONTHLY: {
      const day = value.day === 0 ? 1 : value.day;
      if (!Number.isInteger(day) || day < 1 || day > 31) throw invalidArgument(`refill.day must be between 1 and 31, got ${value.day}`);
      return { amount, interval: "monthly", periodMs: null, day, anchor: null };
    }
    default:
      throw invalidArgument(`refill.interval ${value.interval} is not known`);
  }
}

/**
 * The columns credits and refill are stored in. A new refill counts the
 * current period as refilled: the credits given (or the amount) last until the
 * next boundary.
 */
export function creditColumns(remaining: number | null, refill: Refill | null, now: number) {
  return {
    remaining: remaining ?? refill?.amount ?? null,
    refill_amount: refill?.amount ?? null,
    refill_interval: refill?.interval ?? null,
    refill_period_ms: refill?.periodMs ?? null,
    refill_day: refill?.day ?? null,
    refill_anchor: refill?.anchor ?? null,
    refilled_at: refill === null ? null : new Date(lastRefillBoundary(refill, now)),
  };
}

/** The stored refill columns as a Refill, or null. */
export function refillFromRow(row: {
  refill_amount: number | bigint | null;
  refill_interval: RefillIntervalName | null;
  refill_period_ms: number | bigint | null;
  refill_day: number | null;
  refill_anchor: Date | null;
}): Refill | null {
  if (row.refill_amount === null || row.refill_interval === null) return null;
  return {
    amount: Number(row.refill_amount),
    interval: row.refill_interval,
    periodMs: row.refill_period_ms === null ? null : Number(row.refill_period_ms),
    day: row.refill_day,
    anchor: row.refill_anchor,
  };
}

/** A refill as its message. */
export function toRefillMessage(refill: Refill): RefillMessage {
  return create(RefillSchema, {
    amount: BigInt(refill.amount),
    interval:
      refill.interval === "daily" ? RefillInterval.DAILY : refill.interval === "monthly" ? RefillInterval.MONTHLY : RefillInterval.UNSPECIFIED,
    period: refill.periodMs === null ? undefined : durationFromMs(refill.periodMs),
    day: refill.day ?? 0,
    anchor: refill.anchor === null ? undefined : timestampFromDate(refill.anchor),
  });
}

/**
 * The credit columns after an update naming `remaining` and/or `refill`
 * (undefined: not named). Unlimited (remaining null) drops the refill; a refill
 * kept with new credits keeps its last boundary.
 */
export function updatedCreditColumns(
  key: Pick<ApiKeyRow, "remaining">,
  remaining: number | null | undefined,
  refill: Refill | null | undefined,
  now: number,
) {
  if (remaining === null) return creditColumns(null, null, now);
  if (refill !== undefined) {
    const current = remaining ?? (key.remaining === null ? null : Number(key.remaining));
    return creditColumns(current, refill, now);
  }
  return { remaining };
}
