import type { JsonObject } from "@bufbuild/protobuf";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import { type Authority, actorKeyId, requireInScope, scopeOf } from "../auth/authority.js";
import { requireConsumerRef, requireGrantedPolicy } from "../consumers/consumer.service.js";
import type { ApiKeyUpdate, Database } from "../db/schema.js";
import type { Writer } from "../db/write.js";
import { ApiError, failedPrecondition, invalidArgument, notFound, permissionDenied } from "../errors.js";
import type { AdminUpdateApiKeyRequest } from "../gen/apikeys/v1/admin_pb.js";
import { type ApiKey, CredentialType, type RateLimit, type Refill as RefillMessage } from "../gen/apikeys/v1/resources_pb.js";
import { type SecretBox, generateSigningSecret } from "../jwt/secret-box.js";
import { insertSigningSecret } from "../jwt/signing-secret.repository.js";
import { lockPolicy } from "../policies/policy.repository.js";
import { requireAdministrablePolicy } from "../policies/policy.service.js";
import { generateToken, hashToken, tokenStart } from "../tokens/token.js";
import { requireDescription, requireName, requireUuid, resolveUpdateMask } from "../validation.js";
import { toApiKeyMessage } from "./key-message.js";
import type { KeyRecord } from "./key-record.js";
import { ANY_ORIGIN, requireCidrs, requireEnvironment, requireExpiry, requireMetadata, requireRateLimit } from "./key-options.js";
import * as repo from "./key.repository.js";
import { creditColumns, requireRefill, requireRemaining, updatedCreditColumns } from "./refill.js";

/** How token hashes are made; from config. */
export interface TokenSettings {
  prefix: string;
  pepper: string | undefined;
  /** Encrypts signing keys' secrets; unset when the server has no APIKEYS_SECRET_KEY. */
  secrets?: SecretBox;
}

const MAX_GRACE_SECONDS = 30 * 24 * 3600;

export { toApiKeyMessage };

export async function mustFind(db: Kysely<Database>, id: string): Promise<KeyRecord> {
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
export function requireOwnConsumer(authority: Authority, ref: string): void {
  const scope = scopeOf(authority);
  if (scope === undefined || ref === scope.username || ref.toLowerCase() === scope.id) return;
  throw permissionDenied(
    `your key belongs to consumer ${scope.username} and administers only that consumer's keys, not ${ref === "" ? "keys without a consumer" : `those of ${ref.slice(0, 200)}`}`,
  );
}

/**
 * Creates a key bound to an existing policy; returns it with its token (shown
 * once). Under the name of a deleted key, it gets that key's id back. The
 * caller must hold the policy's `apikeys:` permissions; a consumer-scoped
 * caller creates keys only for its own consumer (the default when none is named).
 */
export async function createKey(
  w: Writer,
  tokens: TokenSettings,
  authority: Authority,
  req: CreateKeyInput,
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
    throw new ApiError("UNKNOWN_ENUM_VALUE", `credential_type ${credentialType} is not known`, {
      field: "credential_type",
      metadata: { enum: "apikeys.v1.CredentialType", value: String(credentialType) },
    });
  }
  const signing = credentialType === CredentialType.SIGNING;
  const secrets = tokens.secrets;
  if (signing && secrets === undefined) {
    throw failedPrecondition(
      "signing keys need a server secret: set APIKEYS_SECRET_KEY (at least 32 characters, the same on every instance) and restart the server",
    );
  }
  const token = signing ? "" : (req.token ?? generateToken(tokens.prefix));
  const secret = signing ? generateSigningSecret() : "";
  const { tx } = w;
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
  if (previousId !== undefined) await w.invalidate({ kind: "key", id });
  if (signing) await insertSigningSecret(tx, id, secrets!.seal(secret, id));
  w.wrote(id);
  // Read back inside the write: a policy delete committing right after would otherwise turn a successful create into not_found.
  return { apiKey: toApiKeyMessage(await mustFind(tx, id)), token, secret };
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
export async function updateKey(w: Writer, authority: Authority, req: AdminUpdateApiKeyRequest): Promise<ApiKey> {
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
  const { tx } = w;
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
  if (remaining !== undefined || refill !== undefined) Object.assign(changes, updatedCreditColumns(key, remaining, refill, Date.now()));
  await repo.updateKey(tx, id, changes);
  await w.invalidate({ kind: "key", id });
  w.wrote(id);
  return toApiKeyMessage(await mustFind(tx, id));
}

/**
 * Issues a new token; the old one keeps working for `gracePeriod`, or stops at
 * once. The caller must be allowed to administer the key (see `updateKey`).
 */
export async function rotateKey(
  w: Writer,
  tokens: TokenSettings,
  authority: Authority,
  rawId: string,
  gracePeriod: Duration | undefined,
): Promise<{ apiKey: ApiKey; token: string }> {
  const id = requireUuid("id", rawId);
  const graceMs = gracePeriod ? Number(gracePeriod.seconds) * 1000 + Math.floor(gracePeriod.nanos / 1e6) : 0;
  if (graceMs < 0 || graceMs > MAX_GRACE_SECONDS * 1000) {
    throw invalidArgument(`grace_period must be between 0s and ${MAX_GRACE_SECONDS}s`);
  }
  const token = generateToken(tokens.prefix);
  const { tx } = w;
  const key = await repo.lockKey(tx, id);
  if (key === undefined) throw notFound(`API key ${id} not found`);
  requireInScope(authority, id, key.consumer_id);
  await requireAdministrablePolicy(tx, authority, key.policy_id);
  if (key.credential_type === "signing") {
    throw failedPrecondition(
      "a signing key has no token to rotate: create a new signing key, move its holder to it, then delete this one",
    );
  }
  await repo.updateKey(tx, id, {
    token_hash: hashToken(token, tokens.pepper),
    start: tokenStart(token),
    previous_token_hash: graceMs > 0 ? key.token_hash : null,
    previous_token_expires_on: graceMs > 0 ? new Date(Date.now() + graceMs) : null,
    previous_start: graceMs > 0 ? key.start : null,
  });
  await w.invalidate({ kind: "key", id });
  w.wrote(id);
  return { apiKey: toApiKeyMessage(await mustFind(tx, id)), token };
}

/** Ends a rotation's grace period at once: the previous token stops working; a no-op without one. */
export async function revokePreviousToken(w: Writer, authority: Authority, rawId: string): Promise<ApiKey> {
  const id = requireUuid("id", rawId);
  const { tx } = w;
  const key = await repo.lockKey(tx, id);
  if (key === undefined) throw notFound(`API key ${id} not found`);
  requireInScope(authority, id, key.consumer_id);
  await requireAdministrablePolicy(tx, authority, key.policy_id);
  if (key.previous_token_hash !== null) {
    await repo.updateKey(tx, id, { previous_token_hash: null, previous_token_expires_on: null, previous_start: null });
    // Verdicts cached for the previous token must go too.
    await w.invalidate({ kind: "key", id });
  }
  w.wrote(id);
  return toApiKeyMessage(await mustFind(tx, id));
}

/**
 * Deletes a key for good (its name remembers its id); returns it as it was.
 * The caller must be allowed to administer the key (see `updateKey`).
 */
export async function deleteKey(w: Writer, authority: Authority, rawId: string): Promise<ApiKey> {
  const id = requireUuid("id", rawId);
  const { tx } = w;
  const key = await repo.lockKey(tx, id);
  if (key === undefined) throw notFound(`API key ${id} not found`);
  requireInScope(authority, id, key.consumer_id);
  await requireAdministrablePolicy(tx, authority, key.policy_id);
  const before = toApiKeyMessage((await repo.findKeyRecordById(tx, id))!);
  await repo.deleteKey(tx, id);
  await w.invalidate({ kind: "key", id });
  w.wrote(id);
  return before;
}
