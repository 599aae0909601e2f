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
  code: string;
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
  private pending = new Map<string, Counter>();
  private flushing: Promise<void> = Promise.resolve();
  private dropped = 0;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly logger: Logger,
  ) {}

  /** Counters not yet written. */
  get size(): number {
    return this.pending.size;
  }

  /** Counts one verification of `keyId` with outcome `code` at `at` (epoch ms). */
  record(keyId: string, code: VerifyCode, at: number): void {
    const hour = Math.floor(at / HOUR_MS) * HOUR_MS;
    const name = verifyCodeName(code);
    const id = `${keyId} ${hour} ${name}`;
    const counter = this.pending.get(id);
    if (counter !== undefined) counter.count++;
    else if (this.pending.size < MAX_PENDING) this.pending.set(id, { keyId, hour, code: name, count: 1 });
    else this.dropped++;
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
    const batch = [...this.pending.values()];
    this.pending = new Map();
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
    const id = `${counter.keyId} ${counter.hour} ${counter.code}`;
    const current = this.pending.get(id);
    if (current !== undefined) current.count += counter.count;
    else if (this.pending.size < MAX_PENDING) this.pending.set(id, counter);
    else this.dropped += counter.count;
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
