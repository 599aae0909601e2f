import { create } from "@bufbuild/protobuf";
import { type Kysely, type RawBuilder, type SqlBool, sql } from "kysely";
import { type Authority, requireInScope, scopeOf } from "../auth/authority.js";
import { findConsumer } from "../consumers/consumer.repository.js";
import { requireConsumerRef } from "../consumers/consumer.service.js";
import type { Database } from "../db/schema.js";
import { invalidArgument, notFound } from "../errors.js";
import { ApiKeyView } from "../gen/apikeys/v1/admin_pb.js";
import { type ApiKey, ApiKeyPolicySchema } from "../gen/apikeys/v1/resources_pb.js";
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
import { DEFAULT_PAGE_SIZE, isUuid, requirePageSize, requireUuid } from "../validation.js";
import { toApiKeyMessage } from "./key-message.js";
import * as repo from "./key.repository.js";
import { mustFind, requireOwnConsumer } from "./key.service.js";

/** Reads a key; a consumer-scoped caller reads only its own consumer's keys. */
export async function getKey(db: Kysely<Database>, authority: Authority, rawId: string): Promise<ApiKey> {
  const id = requireUuid("id", rawId);
  const record = await mustFind(db, id);
  requireInScope(authority, id, record.consumer?.id ?? null);
  return toApiKeyMessage(record);
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
export async function listKeys(
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
  const limit = requirePageSize(req.pageSize, DEFAULT_PAGE_SIZE);
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
}
