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
  token_hash: Uint8Array;
  start: string;
  previous_token_hash: Uint8Array | null;
  previous_token_expires_on: Date | null;
  created_on: CreatedTimestamp;
  updated_on: Timestamp;
  last_used_on: Date | null;
  created_by: string | null;
}

export interface ServiceStateTable {
  key: string;
  value: string;
  updated_on: Timestamp;
}

export interface Database {
  permissions: PermissionsTable;
  policies: PoliciesTable;
  policy_permissions: PolicyPermissionsTable;
  api_keys: ApiKeysTable;
  service_state: ServiceStateTable;
}

export type PermissionRow = Selectable<PermissionsTable>;
export type PolicyRow = Selectable<PoliciesTable>;
export type NewPolicy = Insertable<PoliciesTable>;
export type PolicyUpdate = Updateable<PoliciesTable>;
export type ApiKeyRow = Selectable<ApiKeysTable>;
export type NewApiKey = Insertable<ApiKeysTable>;
export type ApiKeyUpdate = Updateable<ApiKeysTable>;
