import { create, type JsonObject } from "@bufbuild/protobuf";
import { type Duration, type Timestamp, durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Kysely, type RawBuilder, type SqlBool, type Transaction, sql } from "kysely";
import type { ApiKeyRow, ApiKeyUpdate, Database } from "../db/schema.js";
import { apiError, invalidArgument, isUuid, notFound, requireName, requireUuid, withConnectErrors } from "../errors.js";
import { type AdminUpdateApiKeyRequest, ApiKeyView } from "../gen/apikeys/v1/admin_pb.js";
import {
  type ApiKey,
  ApiKeyPolicySchema,
  ApiKeySchema,
  CredentialType,
  type RateLimit,
  type Refill as RefillMessage,
} from "../gen/apikeys/v1/resources_pb.js";
import {
  type FilterTerm,
  type SortColumn,
  containsPattern,
  decodePageToken,
  encodePageToken,
  parseFilter,
  parseOrderBy,
  queryDigest,
} from "../listing/list-query.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Authority, actorKeyId, requireInScope, scopeOf } from "../auth/authority.js";
import { requireConsumerRef, requireGrantedPolicy } from "../consumers/consumer.service.js";
import { findConsumer } from "../consumers/consumer.repository.js";
import { type SecretBox, generateSigningSecret } from "../jwt/secret-box.js";
import { insertSigningSecret } from "../jwt/signing-secret.repository.js";
import { notifyInvalidation } from "../invalidation/invalidation.js";
import { requireAdministrablePolicy, toPolicyMessage } from "../policies/policy.service.js";
import { lockPolicy } from "../policies/policy.repository.js";
import { generateToken, hashToken, parseToken, tokenStart } from "../tokens/token.js";
import { resolveUpdateMask } from "../update-mask.js";
import type { KeyRecord } from "../verify/verdict-cache.js";
import {
  ANY_ORIGIN,
  requireCidrs,
  requireDescription,
  requireEnvironment,
  requireExpiry,
  requireMetadata,
  requireRateLimit,
} from "./key-options.js";
import * as repo from "./key.repository.js";
import { type Refill, creditColumns, requireRefill, requireRemaining, toRefillMessage } from "./refill.js";

/** How token hashes are made; from config. */
export interface TokenSettings {
  prefix: string;
  pepper: string | undefined;
  /** Encrypts signing keys' secrets; unset when the server has no APIKEYS_SECRET_KEY. */
  secrets?: SecretBox;
}

const MAX_PAGE_SIZE = 1000;
const DEFAULT_PAGE_SIZE = 100;
const MAX_GRACE_SECONDS = 30 * 24 * 3600;
const MAX_LEAKED_TOKEN = 1024;
const MAX_SOURCE_URL = 2048;

/**
 * Runs inside a key write's transaction, after the change and before commit,
 * with the id of the key written (e.g. to record an audit event atomically).
 */
export type KeyWriteHook = (tx: Transaction<Database>, keyId: string) => Promise<void>;

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
    description: record.description,
    metadata: record.metadata,
    expiresOn: record.expiresOn ? timestampFromDate(record.expiresOn) : undefined,
    allowedCidrs: record.allowedCidrs,
    environment: record.environment,
    rateLimit: record.rateLimit
      ? { requests: record.rateLimit.requests, period: durationFromMs(record.rateLimit.periodMs) }
      : undefined,
    consumerId: record.consumer?.id ?? "",
    consumerUsername: record.consumer?.username ?? "",
    credentialType: record.credentialType === "signing" ? CredentialType.SIGNING : CredentialType.TOKEN,
    previousStart: record.previousToken?.start ?? "",
    previousTokenExpiresOn: record.previousToken ? timestampFromDate(record.previousToken.expiresOn) : undefined,
    remaining: record.remaining === null ? undefined : BigInt(record.remaining),
    refill: record.refill === null ? undefined : toRefillMessage(record.refill),
  });
}

async function mustFind(db: Kysely<Database>, id: string): Promise<KeyRecord> {
  const record = await repo.findKeyRecordById(db, id);
  if (record === undefined) throw notFound(`API key ${id} not found`);
  return record;
}

/** What a new key is made from; AdminCreateApiKeyRequest fits it. */
export interface CreateKeyInput {
  name: string;
  policyId: string;
  /** A token to use instead of a generated one (the bootstrap key's). */
  token?: string;
  description?: string;
  metadata?: { [key: string]: string };
  expiresOn?: Timestamp;
  /** Empty or unset: any origin. */
  allowedCidrs?: readonly string[];
  environment?: JsonObject;
  rateLimit?: RateLimit;
  /** Id or username of the consumer holding the key; the policy must be granted to it. */
  consumer?: string;
  credentialType?: CredentialType;
  /** Credits; unset: unlimited (or the refill amount when a refill is set). */
  remaining?: bigint;
  refill?: RefillMessage;
}

function rateLimitColumns(limit: { requests: number; periodMs: number } | null) {
  return { rate_limit_requests: limit?.requests ?? null, rate_limit_period_ms: limit?.periodMs ?? null };
}

/**
 * Refuses a consumer-scoped caller naming another consumer (or none, `""`) for
 * a key: it administers only its own consumer's keys.
 */
function requireOwnConsumer(authority: Authority, ref: string): void {
  const scope = scopeOf(authority);
  if (scope === undefined || ref === scope.username || ref.toLowerCase() === scope.id) return;
  throw new ConnectError(
    `your key belongs to consumer ${scope.username} and administers only that consumer's keys, not ${ref === "" ? "keys without a consumer" : `those of ${ref.slice(0, 200)}`}`,
    Code.PermissionDenied,
  );
}

/**
 * Creates a key bound to an existing policy; returns it with its token (shown
 * once). Under the name of a deleted key, it gets that key's id back. The
 * caller must hold the policy's `apikeys:` permissions; a consumer-scoped
 * caller creates keys only for its own consumer (the default when none is named).
 */
export function createKey(
  db: Kysely<Database>,
  tokens: TokenSettings,
  req: CreateKeyInput,
  authority: Authority,
  hook?: KeyWriteHook,
): Promise<{ apiKey: ApiKey; token: string; secret: string }> {
  const name = requireName("name", req.name);
  const policyId = requireUuid("policy_id", req.policyId);
  const description = requireDescription(req.description ?? "");
  const metadata = requireMetadata(req.metadata ?? {});
  const expiresOn = requireExpiry(req.expiresOn);
  const allowedCidrs = req.allowedCidrs === undefined || req.allowedCidrs.length === 0 ? [...ANY_ORIGIN] : requireCidrs(req.allowedCidrs);
  const environment = requireEnvironment(req.environment);
  const rateLimit = requireRateLimit(req.rateLimit);
  const now = Date.now();
  const credits = creditColumns(requireRemaining(req.remaining) ?? null, requireRefill(req.refill, now), now);
  const consumerRef = req.consumer ? requireConsumerRef("consumer", req.consumer) : scopeOf(authority)?.id;
  if (consumerRef !== undefined) requireOwnConsumer(authority, consumerRef);
  const credentialType = req.credentialType ?? CredentialType.UNSPECIFIED;
  if (!(credentialType in CredentialType)) {
    // The binary twin of an unknown enum name in JSON, which the codec refuses with the same reason.
    throw apiError("UNKNOWN_ENUM_VALUE", `credential_type ${credentialType} is not known`, {
      field: "credential_type",
      metadata: { enum: "apikeys.v1.CredentialType", value: String(credentialType) },
    });
  }
  const signing = credentialType === CredentialType.SIGNING;
  const secrets = tokens.secrets;
  if (signing && secrets === undefined) {
    throw new ConnectError(
      "signing keys need a server secret: set APIKEYS_SECRET_KEY (at least 32 characters, the same on every instance) and restart the server",
      Code.FailedPrecondition,
    );
  }
  const token = signing ? "" : (req.token ?? generateToken(tokens.prefix));
  const secret = signing ? generateSigningSecret() : "";
  return withConnectErrors(async () => {
    // The key is read back inside its own transaction: a policy delete committing right
    // after would otherwise turn a successful create into not_found.
    const apiKey = await db.transaction().execute(async (tx) => {
      // A shared lock keeps the policy from being deleted until this key is committed.
      if ((await lockPolicy(tx, policyId, "share")) === undefined) throw notFound(`policy ${policyId} not found`);
      await requireAdministrablePolicy(tx, authority, policyId);
      const consumerId = consumerRef === undefined ? null : await requireGrantedPolicy(tx, consumerRef, policyId);
      const previousId = await repo.takeDeletedKeyId(tx, name);
      const id = await repo.insertKey(tx, {
        ...(previousId !== undefined && { id: previousId }),
        name,
        policy_id: policyId,
        token_hash: signing ? null : hashToken(token, tokens.pepper),
        start: signing ? "" : tokenStart(token),
        credential_type: signing ? "signing" : "token",
        consumer_id: consumerId,
        created_by: actorKeyId(authority),
        description,
        metadata: JSON.stringify(metadata),
        expires_on: expiresOn,
        allowed_cidrs: allowedCidrs,
        environment: JSON.stringify(environment),
        ...rateLimitColumns(rateLimit),
        ...credits,
      });
      // A reused id may still have verdicts cached somewhere from its previous life.
      if (previousId !== undefined) await notifyInvalidation(tx, { kind: "key", id });
      if (signing) await insertSigningSecret(tx, id, secrets!.seal(secret, id));
      await hook?.(tx, id);
      return toApiKeyMessage(await mustFind(tx, id));
    });
    return { apiKey, token, secret };
  });
}

/** Reads a key; a consumer-scoped caller reads only its own consumer's keys. */
export function getKey(db: Kysely<Database>, authority: Authority, rawId: string): Promise<ApiKey> {
  const id = requireUuid("id", rawId);
  return withConnectErrors(async () => {
    const record = await mustFind(db, id);
    requireInScope(authority, id, record.consumer?.id ?? null);
    return toApiKeyMessage(record);
  });
}

const KEY_ORDERS = {
  created_on: { expr: sql`k.created_on`, kind: "time", nullable: false },
  name: { expr: sql`k.name`, kind: "text", nullable: false },
  last_used_on: { expr: sql`k.last_used_on`, kind: "time", nullable: true },
  expires_on: { expr: sql`k.expires_on`, kind: "time", nullable: true },
} satisfies Record<string, SortColumn>;

const KEY_FILTER_FIELDS = ["name", "start", "policy", "consumer", "status"] as const;

/** How far ahead status:expiring_soon looks. */
export const EXPIRING_SOON_DAYS = 7;

const STATUS_CONDITIONS: Record<string, RawBuilder<SqlBool>> = {
  enabled: sql<SqlBool>`(k.enabled and (k.expires_on is null or k.expires_on > now()))`,
  disabled: sql<SqlBool>`not k.enabled`,
  expired: sql<SqlBool>`k.expires_on <= now()`,
  expiring_soon: sql<SqlBool>`(k.expires_on > now() and k.expires_on <= now() + make_interval(days => ${EXPIRING_SOON_DAYS}))`,
  never_used: sql<SqlBool>`k.last_used_on is null`,
};

function keyCondition(term: FilterTerm): RawBuilder<SqlBool> {
  const pattern = containsPattern(term.value);
  switch (term.field) {
    case "":
      return sql<SqlBool>`(k.name ilike ${pattern} or k.start ilike ${pattern})`;
    case "name":
      return sql<SqlBool>`k.name ilike ${pattern}`;
    case "start":
      return sql<SqlBool>`k.start ilike ${pattern}`;
    case "policy":
      return isUuid(term.value)
        ? sql<SqlBool>`k.policy_id = ${term.value.toLowerCase()}`
        : sql<SqlBool>`k.policy_id = (select id from policies where name = ${term.value})`;
    case "consumer":
      return isUuid(term.value)
        ? sql<SqlBool>`k.consumer_id = ${term.value.toLowerCase()}`
        : sql<SqlBool>`k.consumer_id = (select id from consumers where username = ${term.value})`;
    default: {
      const status = STATUS_CONDITIONS[term.value.toLowerCase().replace(/-/g, "_")];
      if (status === undefined) {
        throw invalidArgument(`status:${term.value} is not known; use ${Object.keys(STATUS_CONDITIONS).map((s) => `status:${s}`).join(", ")}`);
      }
      return status;
    }
  }
}

/** Lists keys (a consumer-scoped caller: only its own consumer's), paged, filtered and ordered (see AdminGetApiKeysRequest); policies in full only for API_KEY_VIEW_FULL. */
export function listKeys(
  db: Kysely<Database>,
  authority: Authority,
  req: {
    pageSize: number;
    pageToken: string;
    policyId: string;
    consumer?: string;
    filter?: string;
    orderBy?: string;
    view?: ApiKeyView;
  },
): Promise<{ apiKeys: ApiKey[]; nextPageToken: string; totalSize: number }> {
  if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) {
    throw invalidArgument(`page_size must be between 0 and ${MAX_PAGE_SIZE}`);
  }
  const limit = req.pageSize || DEFAULT_PAGE_SIZE;
  const policyId = req.policyId === "" ? undefined : requireUuid("policy_id", req.policyId);
  const consumerRef = req.consumer ? requireConsumerRef("consumer", req.consumer) : scopeOf(authority)?.id;
  if (consumerRef !== undefined) requireOwnConsumer(authority, consumerRef);
  const view = req.view ?? ApiKeyView.UNSPECIFIED;
  if (!(view in ApiKeyView)) throw invalidArgument(`view ${view} is not known`);
  const full = view === ApiKeyView.FULL;
  const conditions = parseFilter(req.filter ?? "", KEY_FILTER_FIELDS).map(keyCondition);
  const ordering = parseOrderBy(req.orderBy ?? "", KEY_ORDERS, "created_on");
  const digest = queryDigest(["keys", policyId, consumerRef, req.filter ?? "", ordering.name, ordering.descending]);
  const after = req.pageToken === "" ? undefined : decodePageToken(req.pageToken, digest, ordering.column, isUuid);
  return withConnectErrors(async () => {
    if (policyId !== undefined) conditions.push(sql<SqlBool>`k.policy_id = ${policyId}`);
    if (consumerRef !== undefined) {
      const consumerId = (await findConsumer(db, consumerRef))?.id;
      if (consumerId === undefined) throw notFound(`consumer ${consumerRef} not found`);
      conditions.push(sql<SqlBool>`k.consumer_id = ${consumerId}`);
    }
    const { records, totalSize } = await repo.listKeyPage(db, { limit: limit + 1, conditions, ordering, after, permissions: full });
    const page = records.slice(0, limit);
    const last = page[page.length - 1];
    return {
      apiKeys: page.map(({ record }) => {
        const message = toApiKeyMessage(record);
        if (!full) message.policy = create(ApiKeyPolicySchema, { id: record.policy.id, name: record.policy.name });
        return message;
      }),
      nextPageToken: records.length > limit && last ? encodePageToken(digest, last.cursor) : "",
      totalSize,
    };
  });
}

const UPDATABLE = [
  "name",
  "policy_id",
  "enabled",
  "description",
  "metadata",
  "expires_on",
  "allowed_cidrs",
  "environment",
  "rate_limit",
  "consumer",
  "remaining",
  "refill",
] as const;

function presentFields(req: AdminUpdateApiKeyRequest): (typeof UPDATABLE)[number][] {
  const set = {
    name: req.name !== undefined,
    policy_id: req.policyId !== undefined,
    enabled: req.enabled !== undefined,
    description: req.description !== undefined,
    metadata: Object.keys(req.metadata).length > 0,
    expires_on: req.expiresOn !== undefined,
    allowed_cidrs: req.allowedCidrs.length > 0,
    environment: req.environment !== undefined,
    rate_limit: req.rateLimit !== undefined,
    consumer: req.consumer !== undefined,
    remaining: req.remaining !== undefined,
    refill: req.refill !== undefined,
  };
  return UPDATABLE.filter((field) => set[field]);
}

/**
 * Changes the fields of a key named by the update mask (or set in the request);
 * the token stays. The caller must hold the `apikeys:` permissions of the key's
 * policy and, when it moves the key, of the new one; a consumer-scoped caller
 * updates only its own consumer's keys and cannot give them away.
 */
export function updateKey(
  db: Kysely<Database>,
  authority: Authority,
  req: AdminUpdateApiKeyRequest,
  hook?: KeyWriteHook,
): Promise<ApiKey> {
  const id = requireUuid("id", req.id);
  const fields = resolveUpdateMask(req.updateMask, UPDATABLE, presentFields(req));
  const changes: ApiKeyUpdate = {};
  if (fields.has("name")) changes.name = requireName("name", req.name ?? "");
  if (fields.has("enabled")) changes.enabled = req.enabled ?? false;
  if (fields.has("description")) changes.description = requireDescription(req.description ?? "");
  if (fields.has("metadata")) changes.metadata = JSON.stringify(requireMetadata(req.metadata));
  if (fields.has("expires_on")) changes.expires_on = requireExpiry(req.expiresOn);
  // Named in the mask, an empty list admits no origin.
  if (fields.has("allowed_cidrs")) changes.allowed_cidrs = requireCidrs(req.allowedCidrs);
  if (fields.has("environment")) changes.environment = JSON.stringify(requireEnvironment(req.environment));
  if (fields.has("rate_limit")) Object.assign(changes, rateLimitColumns(requireRateLimit(req.rateLimit)));
  const remaining = fields.has("remaining") ? (requireRemaining(req.remaining) ?? null) : undefined;
  const refill = fields.has("refill") ? requireRefill(req.refill, Date.now()) : undefined;
  const policyId = fields.has("policy_id") ? requireUuid("policy_id", req.policyId ?? "") : undefined;
  if (policyId !== undefined) changes.policy_id = policyId;
  const consumer = fields.has("consumer") ? req.consumer || "" : undefined;
  if (consumer) requireConsumerRef("consumer", consumer);
  if (consumer !== undefined) requireOwnConsumer(authority, consumer);
  return withConnectErrors(() =>
    db.transaction().execute(async (tx) => {
      const key = await repo.lockKey(tx, id);
      if (key === undefined) throw notFound(`API key ${id} not found`);
      requireInScope(authority, id, key.consumer_id);
      await requireAdministrablePolicy(tx, authority, key.policy_id);
      if (policyId !== undefined) {
        if ((await lockPolicy(tx, policyId, "share")) === undefined) throw notFound(`policy ${policyId} not found`);
        await requireAdministrablePolicy(tx, authority, policyId);
      }
      // A consumer's key may only use a policy granted to that consumer: check when either changes.
      const consumerRef = consumer ?? key.consumer_id;
      if (consumerRef && (policyId !== undefined || consumer !== undefined)) {
        const consumerId = await requireGrantedPolicy(tx, consumerRef, policyId ?? key.policy_id);
        if (consumer !== undefined) changes.consumer_id = consumerId;
      } else if (consumer === "") {
        changes.consumer_id = null;
      }
      if (remaining !== undefined || refill !== undefined) Object.assign(changes, updatedCredits(key, remaining, refill));
      await repo.updateKey(tx, id, changes);
      await notifyInvalidation(tx, { kind: "key", id });
      await hook?.(tx, id);
      return toApiKeyMessage(await mustFind(tx, id));
    }),
  );
}

/**
 * The credit columns after an update naming `remaining` and/or `refill`
 * (undefined: not named). Unlimited (remaining null) drops the refill; a refill
 * kept with new credits keeps its last boundary.
 */
function updatedCredits(key: ApiKeyRow, remaining: number | null | undefined, refill: Refill | null | undefined) {
  const now = Date.now();
  if (remaining === null) return creditColumns(null, null, now);
  if (refill !== undefined) {
    const current = remaining ?? (key.remaining === null ? null : Number(key.remaining));
    return creditColumns(current, refill, now);
  }
  return { remaining };
}

/**
 * Issues a new token; the old one keeps working for `gracePeriod`, or stops at
 * once. The caller must be allowed to administer the key (see `updateKey`).
 */
export function rotateKey(
  db: Kysely<Database>,
  tokens: TokenSettings,
  authority: Authority,
  rawId: string,
  gracePeriod: Duration | undefined,
  hook?: KeyWriteHook,
): Promise<{ apiKey: ApiKey; token: string }> {
  const id = requireUuid("id", rawId);
  const graceMs = gracePeriod ? Number(gracePeriod.seconds) * 1000 + Math.floor(gracePeriod.nanos / 1e6) : 0;
  if (graceMs < 0 || graceMs > MAX_GRACE_SECONDS * 1000) {
    throw invalidArgument(`grace_period must be between 0s and ${MAX_GRACE_SECONDS}s`);
  }
  const token = generateToken(tokens.prefix);
  return withConnectErrors(async () => {
    const apiKey = await db.transaction().execute(async (tx) => {
      const key = await repo.lockKey(tx, id);
      if (key === undefined) throw notFound(`API key ${id} not found`);
      requireInScope(authority, id, key.consumer_id);
      await requireAdministrablePolicy(tx, authority, key.policy_id);
      if (key.credential_type === "signing") {
        throw new ConnectError(
          "a signing key has no token to rotate: create a new signing key, move its holder to it, then delete this one",
          Code.FailedPrecondition,
        );
      }
      await repo.updateKey(tx, id, {
        token_hash: hashToken(token, tokens.pepper),
        start: tokenStart(token),
        previous_token_hash: graceMs > 0 ? key.token_hash : null,
        previous_token_expires_on: graceMs > 0 ? new Date(Date.now() + graceMs) : null,
        previous_start: graceMs > 0 ? key.start : null,
      });
      await notifyInvalidation(tx, { kind: "key", id });
      await hook?.(tx, id);
      return toApiKeyMessage(await mustFind(tx, id));
    });
    return { apiKey, token };
  });
}

/** Ends a rotation's grace period at once: the previous token stops working; a no-op without one. */
export function revokePreviousToken(db: Kysely<Database>, authority: Authority, rawId: string, hook?: KeyWriteHook): Promise<ApiKey> {
  const id = requireUuid("id", rawId);
  return withConnectErrors(() =>
    db.transaction().execute(async (tx) => {
      const key = await repo.lockKey(tx, id);
      if (key === undefined) throw notFound(`API key ${id} not found`);
      requireInScope(authority, id, key.consumer_id);
      await requireAdministrablePolicy(tx, authority, key.policy_id);
      if (key.previous_token_hash !== null) {
        await repo.updateKey(tx, id, { previous_token_hash: null, previous_token_expires_on: null, previous_start: null });
        // Verdicts cached for the previous token must go too.
        await notifyInvalidation(tx, { kind: "key", id });
      }
      await hook?.(tx, id);
      return toApiKeyMessage(await mustFind(tx, id));
    }),
  );
}

/**
 * Deletes a key for good (its name remembers its id); returns it as it was.
 * The caller must be allowed to administer the key (see `updateKey`).
 */
export function deleteKey(db: Kysely<Database>, authority: Authority, rawId: string, hook?: KeyWriteHook): Promise<ApiKey> {
  const id = requireUuid("id", rawId);
  return withConnectErrors(() =>
    db.transaction().execute(async (tx) => {
      const key = await repo.lockKey(tx, id);
      if (key === undefined) throw notFound(`API key ${id} not found`);
      requireInScope(authority, id, key.consumer_id);
      await requireAdministrablePolicy(tx, authority, key.policy_id);
      const before = toApiKeyMessage((await repo.findKeyRecordById(tx, id))!);
      await repo.deleteKey(tx, id);
      await notifyInvalidation(tx, { kind: "key", id });
      await hook?.(tx, id);
      return before;
    }),
  );
}

function requireSourceUrl(value: string): string {
  if (value === "") return value;
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (value.length > MAX_SOURCE_URL || url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw invalidArgument(`source_url must be an http or https URL of at most ${MAX_SOURCE_URL} characters`);
  }
  return value;
}

/**
 * Handles a leaked-token report: a token of ours (prefix and checksum) that
 * still identifies a key disables that key at once. The answer says only
 * whether the token was recognised and found, never which key (`keyId` is for
 * the caller's cache, not for the reporter); `hook` runs in the same
 * transaction, only when a key was disabled.
 */
export function reportLeakedToken(
  db: Kysely<Database>,
  tokens: TokenSettings,
  req: { token: string; sourceUrl: string },
  hook?: KeyWriteHook,
): Promise<{ recognized: boolean; found: boolean; keyId?: string }> {
  const token = req.token.trim();
  if (token === "") throw invalidArgument("token is required");
  if (token.length > MAX_LEAKED_TOKEN) throw invalidArgument(`token must be at most ${MAX_LEAKED_TOKEN} characters`);
  requireSourceUrl(req.sourceUrl);
  if (parseToken(token, tokens.prefix) === undefined) return Promise.resolve({ recognized: false, found: false });
  const hash = hashToken(token, tokens.pepper);
  return withConnectErrors(() =>
    db.transaction().execute(async (tx) => {
      const id = await repo.lockKeyByTokenHash(tx, hash);
      if (id === undefined) return { recognized: true, found: false };
      await repo.updateKey(tx, id, { enabled: false });
      await notifyInvalidation(tx, { kind: "key", id });
      await hook?.(tx, id);
      return { recognized: true, found: true, keyId: id };
    }),
  );
}
