import { create } from "@bufbuild/protobuf";
import { type Kysely, sql } from "kysely";
import { type ComponentHealth, ComponentHealthSchema } from "../gen/apikeys/v1/api_keys_pb.js";
import type { Database } from "./schema.js";

const HEALTH_TIMEOUT_MS = 2_000;

/** Whether the database answers a trivial query within the health timeout; the message names the backend or the failure. */
export async function checkDatabase(db: Kysely<Database>, kind: "postgres" | "pglite"): Promise<ComponentHealth> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      sql`select 1`.execute(db),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${HEALTH_TIMEOUT_MS} ms`)), HEALTH_TIMEOUT_MS);
      }),
    ]);
    return create(ComponentHealthSchema, { name: "database", healthy: true, message: kind });
  } catch (err) {
    return create(ComponentHealthSchema, { name: "database", healthy: false, message: (err as Error).message });
  } finally {
    clearTimeout(timer);
  }
}
