import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Kysely, sql } from "kysely";
import { type Authority, requireInScope } from "../auth/authority.js";
import type { Database } from "../db/schema.js";
import { ApiError, invalidArgument, notFound } from "../errors.js";
import { requireUuid } from "../validation.js";
import { type AdminGetApiKeyUsageRequest, type AdminGetApiKeyUsageResponse, UsageGranularity } from "../gen/apikeys/v1/admin_pb.js";

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** The default range: the last 30 days. */
const DEFAULT_RANGE_MS = 30 * DAY_MS;
const MAX_RANGE_MS = { hour: 31 * DAY_MS, day: 366 * DAY_MS };

type Answer = Pick<AdminGetApiKeyUsageResponse, "buckets" | "totals">;

/**
 * A key's verification outcomes per hour or UTC day over [start, end): buckets
 * with any count, oldest first, and totals. Only flushed counts are seen (each
 * instance flushes every few seconds). A consumer-scoped caller reads only its
 * own consumer's keys.
 */
export async function getKeyUsage(db: Kysely<Database>, authority: Authority, req: AdminGetApiKeyUsageRequest, now: number): Promise<Answer> {
  const id = requireUuid("id", req.id);
  const granularity = req.granularity === UsageGranularity.UNSPECIFIED ? UsageGranularity.DAY : req.granularity;
  if (granularity !== UsageGranularity.HOUR && granularity !== UsageGranularity.DAY) {
    // The binary twin of an unknown enum name in JSON, which the codec refuses with the same reason.
    throw new ApiError("UNKNOWN_ENUM_VALUE", `granularity ${req.granularity} is not known`, {
      field: "granularity",
      metadata: { enum: "apikeys.v1.UsageGranularity", value: String(req.granularity) },
    });
  }
  const bucketMs = granularity === UsageGranularity.HOUR ? HOUR_MS : DAY_MS;
  const end = req.endTime === undefined ? now : timestampDate(req.endTime).getTime();
  const rawStart = req.startTime === undefined ? end - DEFAULT_RANGE_MS : timestampDate(req.startTime).getTime();
  if (!(rawStart < end)) throw invalidArgument("start_time must be before end_time", "start_time");
  const start = Math.floor(rawStart / bucketMs) * bucketMs;
  const maxRange = granularity === UsageGranularity.HOUR ? MAX_RANGE_MS.hour : MAX_RANGE_MS.day;
  if (end - start > maxRange) {
    throw invalidArgument(
      `end_time - start_time must be at most ${maxRange / DAY_MS} days for ${granularity === UsageGranularity.HOUR ? "hours" : "days"}`,
    );
  }

  const key = await db.selectFrom("api_keys").select(["id", "consumer_id"]).where("id", "=", id).executeTakeFirst();
  if (key === undefined) throw notFound(`API key ${id} not found`);
  requireInScope(authority, id, key.consumer_id);
  const bucketSeconds = bucketMs / 1000;
  const rows = await sql<{ bucket: number | string; code: string; count: number | string | bigint }>`
    select floor(extract(epoch from hour) / ${bucketSeconds}::int)::bigint * ${bucketSeconds}::int as bucket, code, sum(count)::bigint as count
    from key_usage
    where key_id = ${id}::uuid and hour >= ${new Date(start).toISOString()}::timestamptz and hour < ${new Date(end).toISOString()}::timestamptz
    group by 1, 2
    order by 1, 2`.execute(db);
  const buckets = new Map<number, Record<string, bigint>>();
  const totals: Record<string, bigint> = {};
  for (const row of rows.rows) {
    const at = Number(row.bucket) * 1000;
    const count = BigInt(row.count);
    let counts = buckets.get(at);
    if (counts === undefined) buckets.set(at, (counts = {}));
    counts[row.code] = count;
    totals[row.code] = (totals[row.code] ?? 0n) + count;
  }
  return {
    buckets: [...buckets].map(([at, counts]) => ({ $typeName: "apikeys.v1.UsageBucket" as const, startTime: timestampFromDate(new Date(at)), counts })),
    totals,
  };
}
