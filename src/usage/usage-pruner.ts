import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { Database } from "../db/schema.js";
import { pruneUsage } from "./usage-recorder.js";

/** How often usage past its retention is deleted. */
const PRUNE_INTERVAL_MS = 3_600_000;

/**
 * Deletes hourly usage older than the retention in the background: soon after
 * start, then every hour. Every instance prunes; the deletes are idempotent.
 */
export class UsagePruner {
  private readonly timer: NodeJS.Timeout;
  private readonly first: NodeJS.Timeout;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly retentionMs: number,
    private readonly logger: Logger,
  ) {
    this.first = setTimeout(() => void this.prune(), 10_000);
    this.timer = setInterval(() => void this.prune(), PRUNE_INTERVAL_MS);
    this.first.unref();
    this.timer.unref();
  }

  /** Deletes what is past retention now; returns how many hourly rows went. */
  async prune(now = Date.now()): Promise<number> {
    try {
      const deleted = await pruneUsage(this.db, this.retentionMs, now);
      if (deleted > 0) this.logger.info({ deleted }, "pruned key usage past its retention");
      return deleted;
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "could not prune key usage");
      return 0;
    }
  }

  close(): void {
    clearTimeout(this.first);
    clearInterval(this.timer);
  }
}
