import { create } from "@bufbuild/protobuf";
import { type Duration, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { invalidArgument, notFound, requireName, requireUuid, toConnectError } from "../errors.js";
import type { AdminUpdateApiKeyRequest } from "../gen/apikeys/v1/admin_pb.js";
import { type ApiKey, ApiKeySchema } from "../gen/apikeys/v1/resources_pb.js";
import { notifyInvalidation } from "../invalidation/invalidation.js";
import { toPolicyMessage } from "../policies/policy.service.js";
import { lockPolicy } from "../policies/policy.repository.js";
import { generateToken, hashToken, tokenStart } from "../tokens/token.js";
import { resolveUpdateMask } from "../update-mask.js";
import type { KeyRecord } from "../verify/verdict-cache.js";
import * as repo from "./key.repository.js";

/** How token hashes are made; from config. */
export interface TokenSettings {
  prefix: string;
  pepper: string | undefined;
}

const MAX_PAGE_SIZE = 1000;
const DEFAULT_PAGE_SIZE = 100;
const MAX_GRACE_SECONDS = 30 * 24 * 3600;

/** Maps a key record to its message (never with a token). */
export function toApiKeyMessage(record: KeyRecord): ApiKey {
  return create(ApiKeySchema, {
    id: record.id,
    name: record.name,
    policy: toPolicyMessage(record.policy),
    enabled: record.enabled,
    start: record.start,
    createdOn: timestampFromDate(record.createdOn),
    updatedOn: timestampFromDate(record.updatedOn),
    lastUsedOn: record.lastUsedOn ? timestampFromDate(record.lastUsedOn) : undefined,
    createdBy: record.createdBy ?? "",
  });
}

async function run<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw toConnectError(err);
  }
}

async function mustFind(db: Kysely<Database>, id: string): Promise<KeyRecord> {
  const record = await repo.findKeyRecordById(db, id);
  if (record === undefined) throw notFound(`API key ${id} not found`);
  return record;
}

/** Creates a key bound to an existing policy; returns it with its token (shown once). */
export function createKey(
  db: Kysely<Database>,
  tokens: TokenSettings,
  req: { name: string; policyId: string; token?: string },
  createdBy: string | null,
): Promise<{ apiKey: ApiKey; token: string }> {
  const name = requireName("name", req.name);
  const policyId = requireUuid("policy_id", req.policyId);
  const token = req.token ?? generateToken(tokens.prefix);
  return run(async () => {
    const id = await db.transaction().execute(async (tx) => {
      // A shared lock keeps the policy from being deleted until this key is committed.
      if ((await lockPolicy(tx, policyId, "share")) === undefined) throw notFound(`policy ${policyId} not found`);
      return repo.insertKey(tx, {
        name,
        policy_id: policyId,
        token_hash: hashToken(token, tokens.pepper),
        start: tokenStart(token),
        created_by: createdBy,
      });
    });
    return { apiKey: toApiKeyMessage(await mustFind(db, id)), token };
  });
}

export function getKey(db: Kysely<Database>, rawId: string): Promise<ApiKey> {
  const id = requireUuid("id", rawId);
  return run(async () => toApiKeyMessage(await mustFind(db, id)));
}

function encodePageToken(record: KeyRecord): string {
  return Buffer.from(JSON.stringify([record.createdOn.toISOString(), record.id])).toString("base64url");
}

function decodePageToken(token: string): { createdOn: Date; id: string } {
  try {
    const [createdOn, id] = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as [string, string];
    const date = new Date(createdOn);
    if (Number.isNaN(date.getTime())) throw new Error("bad date");
    return { createdOn: date, id: requireUuid("page_token", id) };
  } catch {
    throw invalidArgument("page_token is not one this service issued");
  }
}

/** Lists keys oldest first, paged, optionally for one policy. */
export function listKeys(
  db: Kysely<Database>,
  req: { pageSize: number; pageToken: string; policyId: string },
): Promise<{ apiKeys: ApiKey[]; nextPageToken: string }> {
  if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) {
    throw invalidArgument(`page_size must be between 0 and ${MAX_PAGE_SIZE}`);
  }
  const limit = req.pageSize || DEFAULT_PAGE_SIZE;
  const policyId = req.policyId === "" ? undefined : requireUuid("policy_id", req.policyId);
  const after = req.pageToken === "" ? undefined : decodePageToken(req.pageToken);
  return run(async () => {
    const records = await repo.listKeyRecords(db, { limit: limit + 1, policyId, after });
    const page = records.slice(0, limit);
    const last = page[page.length - 1];
    return {
      apiKeys: page.map(toApiKeyMessage),
      nextPageToken: records.length > limit && last ? encodePageToken(last) : "",
    };
  });
}

/** Renames a key, moves it to another policy, or enables/disables it. */
export function updateKey(db: Kysely<Database>, req: AdminUpdateApiKeyRequest): Promise<ApiKey> {
  const id = requireUuid("id", req.id);
  const present = [
    ...(req.name !== undefined ? (["name"] as const) : []),
    ...(req.policyId !== undefined ? (["policy_id"] as const) : []),
    ...(req.enabled !== undefined ? (["enabled"] as const) : []),
  ];
  const fields = resolveUpdateMask(req.updateMask, ["name", "policy_id", "enabled"] as const, present);
  const name = fields.has("name") ? requireName("name", req.name ?? "") : undefined;
  const policyId = fields.has("policy_id") ? requireUuid("policy_id", req.policyId ?? "") : undefined;
  const enabled = fields.has("enabled") ? (req.enabled ?? false) : undefined;
  return run(async () => {
    await db.transaction().execute(async (tx) => {
      if ((await repo.lockKey(tx, id)) === undefined) throw notFound(`API key ${id} not found`);
      if (policyId !== undefined && (await lockPolicy(tx, policyId, "share")) === undefined) {
        throw notFound(`policy ${policyId} not found`);
      }
      await repo.updateKey(tx, id, {
        ...(name !== undefined && { name }),
        ...(policyId !== undefined && { policy_id: policyId }),
        ...(enabled !== undefined && { enabled }),
      });
      await notifyInvalidation(tx, { kind: "key", id });
    });
    return toApiKeyMessage(await mustFind(db, id));
  });
}

/** Issues a new token; the old one keeps working for `gracePeriod`, or stops at once. */
export function rotateKey(
  db: Kysely<Database>,
  tokens: TokenSettings,
  rawId: string,
  gracePeriod: Duration | undefined,
): Promise<{ apiKey: ApiKey; token: string }> {
  const id = requireUuid("id", rawId);
  const graceMs = gracePeriod ? Number(gracePeriod.seconds) * 1000 + Math.floor(gracePeriod.nanos / 1e6) : 0;
  if (graceMs < 0 || graceMs > MAX_GRACE_SECONDS * 1000) {
    throw invalidArgument(`grace_period must be between 0s and ${MAX_GRACE_SECONDS}s`);
  }
  const token = generateToken(tokens.prefix);
  return run(async () => {
    await db.transaction().execute(async (tx) => {
      const key = await repo.lockKey(tx, id);
      if (key === undefined) throw notFound(`API key ${id} not found`);
      await repo.updateKey(tx, id, {
        token_hash: hashToken(token, tokens.pepper),
        start: tokenStart(token),
        previous_token_hash: graceMs > 0 ? key.token_hash : null,
        previous_token_expires_on: graceMs > 0 ? new Date(Date.now() + graceMs) : null,
      });
      await notifyInvalidation(tx, { kind: "key", id });
    });
    return { apiKey: toApiKeyMessage(await mustFind(db, id)), token };
  });
}

/** Deletes a key for good; returns it as it was. */
export function deleteKey(db: Kysely<Database>, rawId: string): Promise<ApiKey> {
  const id = requireUuid("id", rawId);
  return run(() =>
    db.transaction().execute(async (tx) => {
      if ((await repo.lockKey(tx, id)) === undefined) throw notFound(`API key ${id} not found`);
      const before = toApiKeyMessage((await repo.findKeyRecordById(tx, id))!);
      await repo.deleteKey(tx, id);
      await notifyInvalidation(tx, { kind: "key", id });
      return before;
    }),
  );
}
