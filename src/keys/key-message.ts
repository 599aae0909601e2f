import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type ApiKey, ApiKeySchema, CredentialType } from "../gen/apikeys/v1/resources_pb.js";
import { toPolicyMessage } from "../policies/policy-message.js";
import type { KeyRecord } from "./key-record.js";
import { toRefillMessage } from "./refill.js";

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
