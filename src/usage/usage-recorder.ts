import { type Kysely, sql } from "kysely";
import type { Logger } from "pino";
import type { Database } from "../db/schema.js";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";

const HOUR_MS = 3_600_000;
/** Rows per upsert statement (4 parameters each, far below Postgres's 65,535). */
const ROWS_PER_STATEMENT = 5_000;
/** Counters held while the database refuses flushes; past this, new ones are dropped (and logged). */
const MAX_PENDING = 200_000;

interface Counter {
  keyId: string;
  hour: number;
  /** The stored name of `verifyCode`. */
  code: string;
  verifyCode: VerifyCode;
  count: number;
}

/** The name a VerifyCode is stored and reported under, e.g. "VERIFY_CODE_VALID". */
export function verifyCodeName(code: VerifyCode): string {
  return `VERIFY_CODE_${VerifyCode[code] ?? "UNSPECIFIED"}`;
}

/**
 * Counts verification outcomes per key per UTC hour in memory and writes them
 * in batches: each flush is one upsert (`count = count + excluded.count`), so
 * instances add to the same rows. A flush that fails puts its counts back for
 * the next one. What is lost on a crash is at most one flush interval's counts.
 */
export class UsageRecorder {
  /** Pending counters by key id: one per hour and outcome seen since the last flush, so a key's list is short. */
  private pending = new Map<string, Counter[]>();
  private counters = 0;
  private flushing: Promise<void> = Promise.resolve();
  private dropped = 0;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly logger: Logger,
  ) {}

  /** Counters not yet written. */
  get size(): number {
    return this.counters;
  }

  /** Counts one verification of `keyId` with outcome `code` at `at` (epoch ms); no allocation once its counter exists. */
  record(keyId: string, code: VerifyCode, at: number): void {
    const hour = Math.floor(at / HOUR_MS) * HOUR_MS;
    const list = this.pending.get(keyId);
    if (list !== undefined) {
      for (const counter of list) {
        if (counter.hour === hour && counter.verifyCode === code) {
          counter.count++;
          return;
        }
      }
    }
    this.add(list, { keyId, hour, code: verifyCodeName(code), verifyCode: code, count: 1 });
  }

  /** A new counter, unless MAX_PENDING are held (then its counts are dropped). */
  private add(list: Counter[] | undefined, counter: Counter): void {
    if (this.counters >= MAX_PENDING) {
      this.dropped += counter.count;
      return;
    }
    if (list === undefined) this.pending.set(counter.keyId, [counter]);
    else list.push(counter);
    this.counters++;
  }

  /** Writes every pending count; flushes run one at a time (a second waits for the first). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.flushNow());
    return this.flushing;
  }

  private async flushNow(): Promise<void> {
    if (this.dropped > 0) {
      this.logger.warn({ dropped: this.dropped }, "usage counts dropped: too many pending while the database refused flushes");
      this.dropped = 0;
    }
    if (this.pending.size === 0) return;
    const batch = [...this.pending.values()].flat();
    this.pending = new Map();
    this.counters = 0;
    for (let i = 0; i < batch.length; i += ROWS_PER_STATEMENT) {
      const rows = batch.slice(i, i + ROWS_PER_STATEMENT);
      try {
        await upsertUsage(this.db, rows);
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, "could not record key usage; retrying with the next flush");
        for (const counter of batch.slice(i)) this.putBack(counter);
        return;
      }
    }
  }

  private putBack(counter: Counter): void {
    const list = this.pending.get(counter.keyId);
    const current = list?.find((c) => c.hour === counter.hour && c.verifyCode === counter.verifyCode);
    if (current !== undefined) current.count += counter.count;
    else this.add(list, counter);
  }
}

/** Adds counts to their rows in one statement; counts of keys deleted meanwhile are skipped. */
async function upsertUsage(db: Kysely<Database>, rows: readonly Counter[]): Promise<void> {
  const values = rows.map(
    (r) => sql`(${r.keyId}::uuid, ${new Date(r.hour).toISOString()}::timestamptz, ${r.code}::text, ${r.count}::bigint)`,
  );
  await sql`insert into key_usage (key_id, hour, code, count)
    select v.key_id, v.hour, v.code, v.count from (values ${sql.join(values)}) as v(key_id, hour, code, count)
    where exists (select 1 from api_keys k where k.id = v.key_id)
    on conflict (key_id, hour, code) do update set count = key_usage.count + excluded.count`.execute(db);
}

/** Deletes usage older than `retentionMs` before `now`; returns how many rows went. */
export async function pruneUsage(db: Kysely<Database>, retentionMs: number, now: number): Promise<number> {
  const cutoff = new Date(Math.floor((now - retentionMs) / HOUR_MS) * HOUR_MS);
  const result = await db.deleteFrom("key_usage").where("hour", "<", cutoff).executeTakeFirst();
  return Number(result.numDeletedRows);
}
