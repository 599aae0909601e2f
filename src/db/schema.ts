import type { ColumnType, Generated, Insertable, Selectable, Updateable } from "kysely";

type CreatedTimestamp = ColumnType<Date, Date | string | undefined, never>;
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

export interface PermissionsTable {
  name: string;
  service: string;
  description: Generated<string>;
  deprecated: Generated<boolean>;
  created_on: CreatedTimestamp;
  updated_on: Timestamp;
}

export interface PoliciesTable {
  id: Generated<string>;
  name: string;
  description: Generated<string>;
  created_on: CreatedTimestamp;
  updated_on: Timestamp;
  created_by: string | null;
}

export interface PolicyPermissionsTable {
  policy_id: string;
  permission: string;
}

export interface ApiKeysTable {
  id: Generated<string>;
  name: string;
  policy_id: string;
  enabled: Generated<boolean>;
  /** Null for a signing key, which has no bearer token. */
  token_hash: Uint8Array | null;
  start: string;
  previous_token_hash: Uint8Array | null;
  previous_token_expires_on: Date | null;
  /** Display prefix of the previous token; null when none, or rotated before it was recorded. */
  previous_start: string | null;
  created_on: CreatedTimestamp;
  updated_on: Timestamp;
  last_used_on: Date | null;
  created_by: string | null;
  description: Generated<string>;
  /** Written as a JSON string. */
  metadata: ColumnType<Record<string, string>, string | undefined, string>;
  expires_on: Date | null;
  allowed_cidrs: Generated<string[]>;
  /** Written as a JSON string; values are strings, numbers or booleans. */
  environment: ColumnType<Record<string, string | number | boolean>, string | undefined, string>;
  rate_limit_requests: number | null;
  rate_limit_period_ms: number | null;
  consumer_id: string | null;
  credential_type: ColumnType<CredentialTypeName, CredentialTypeName | undefined, CredentialTypeName>;
  /** Credits left; null means unlimited (int8: read through Number()). */
  remaining: ColumnType<number | bigint | null, number | null | undefined, number | null>;
  refill_amount: ColumnType<number | bigint | null, number | null | undefined, number | null>;
  refill_interval: RefillIntervalName | null;
  refill_period_ms: ColumnType<number | bigint | null, number | null | undefined, number | null>;
  refill_day: number | null;
  refill_anchor: Date | null;
  /** The refill boundary the credits were last set back at. */
  refilled_at: Date | null;
}

/** How a key's credits are refilled, as stored. */
export type RefillIntervalName = "daily" | "monthly" | "period";

export interface KeyUsageTable {
  key_id: string;
  /** Start of the UTC hour. */
  hour: Date;
  /** VerifyCode name, e.g. "VERIFY_CODE_VALID". */
  code: string;
  count: ColumnType<number | bigint, number, number>;
}

/** How a key's holder authenticates, as stored. */
export type CredentialTypeName = "token" | "signing";

export interface ConsumersTable {
  id: Generated<string>;
  username: string;
  created_on: CreatedTimestamp;
  created_by: string | null;
}

export interface ConsumerPoliciesTable {
  consumer_id: string;
  policy_id: string;
  created_on: CreatedTimestamp;
}

export interface SigningSecretsTable {
  key_id: string;
  ciphertext: Uint8Array;
  created_on: CreatedTimestamp;
}

export interface UsedJtisTable {
  key_id: string;
  jti: string;
  expires_on: Date;
}

/** Where in a call an audit event was written. */
export type AuditStageName = "attempt" | "success" | "failure";

export interface AuditEventsTable {
  /** bigint identity; read as a string so both drivers agree. */
  id: ColumnType<string, never, never>;
  call_id: string;
  occurred_on: CreatedTimestamp;
  rpc: string;
  stage: AuditStageName;
  actor_key_id: string | null;
  target_ids: ColumnType<string[], string[] | undefined, never>;
  /** Written as a JSON string. */
  request: ColumnType<Record<string, unknown>, string | undefined, never>;
  code: ColumnType<string, string | undefined, never>;
  message: ColumnType<string, string | undefined, never>;
}

export interface DeletedApiKeysTable {
  name: string;
  id: string;
  deleted_on: CreatedTimestamp;
}

/** Who owns a permission namespace: exactly one of the two owner columns is set. */
export interface PermissionNamespacesTable {
  service: string;
  owner_consumer_id: string | null;
  owner_policy_id: string | null;
  /** The key whose registration claimed the namespace. */
  claimed_by: string;
  claimed_on: CreatedTimestamp;
}

export interface ServiceStateTable {
  key: string;
  value: string;
  updated_on: Timestamp;
}

export interface Database {
  permissions: PermissionsTable;
  permission_namespaces: PermissionNamespacesTable;
  policies: PoliciesTable;
  policy_permissions: PolicyPermissionsTable;
  api_keys: ApiKeysTable;
  key_usage: KeyUsageTable;
  deleted_api_keys: DeletedApiKeysTable;
  consumers: ConsumersTable;
  consumer_policies: ConsumerPoliciesTable;
  signing_secrets: SigningSecretsTable;
  used_jtis: UsedJtisTable;
  audit_events: AuditEventsTable;
  service_state: ServiceStateTable;
}

export type PermissionRow = Selectable<PermissionsTable>;
export type PolicyRow = Selectable<PoliciesTable>;
export type NewPolicy = Insertable<PoliciesTable>;
export type PolicyUpdate = Updateable<PoliciesTable>;
export type ApiKeyRow = Selectable<ApiKeysTable>;
export type NewApiKey = Insertable<ApiKeysTable>;
export type ApiKeyUpdate = Updateable<ApiKeysTable>;
