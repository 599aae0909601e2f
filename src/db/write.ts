import { type ContextValues, createContextKey } from "@connectrpc/connect";
import type { Kysely, Transaction } from "kysely";
import { type Invalidation, notifyInvalidation } from "./invalidation.js";
import { databaseError } from "./database-errors.js";
import type { Database } from "./schema.js";

/**
 * The one way anything is written. `write(ctx, call, fn)` runs `fn` in a
 * transaction with a Writer: its `invalidate` queues the NOTIFY inside that
 * transaction (so every instance hears of the change exactly when it commits)
 * and evicts this instance's cache right after the commit (so the caller reads
 * its own write); the call's success record (the admin audit log's) is written
 * inside the same transaction, naming what `fn` reported with `wrote`. Database
 * errors leave as the ApiError their SQLSTATE means.
 */
export interface Writer {
  readonly tx: Transaction<Database>;
  /** Queues an invalidation with the change; this instance evicts it once committed. */
  invalidate(event: Invalidation): Promise<void>;
  /** Names records the write created, changed or deleted, for its success record. */
  wrote(...ids: string[]): void;
}

/** What `write` needs of the application: the database and this instance's cache eviction. */
export interface WriteContext {
  db: Kysely<Database>;
  evict(event: Invalidation): void;
}

/** Records a write's success in its transaction, naming the ids the write reported. */
export type SuccessRecorder = (tx: Transaction<Database>, targetIds: string[]) => Promise<void>;

/** Where a call's success recorder waits for `write` (the admin audit interceptor puts it there). */
export const successRecorder = createContextKey<SuccessRecorder | undefined>(undefined, {
  description: "records a write's success inside its transaction",
});

export async function write<T>(
  ctx: WriteContext,
  call: { values: ContextValues } | undefined,
  fn: (w: Writer) => Promise<T>,
): Promise<T> {
  const events: Invalidation[] = [];
  const targets = new Set<string>();
  const record = call?.values.get(successRecorder);
  let result: T;
  try {
    result = await ctx.db.transaction().execute(async (tx) => {
      const writer: Writer = {
        tx,
        async invalidate(event) {
          events.push(event);
          await notifyInvalidation(tx, event);
        },
        wrote(...ids) {
          for (const id of ids) targets.add(id);
        },
      };
      const out = await fn(writer);
      await record?.(tx, [...targets]);
      return out;
    });
  } catch (err) {
    throw databaseError(err) ?? err;
  }
  for (const event of events) ctx.evict(event);
  return result;
}
