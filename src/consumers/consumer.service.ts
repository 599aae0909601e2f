import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Kysely, type RawBuilder, type SqlBool, type Transaction, sql } from "kysely";
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
import { type Authority, actorKeyId, requireUnscoped, scopeOf } from "../auth/authority.js";
import type { Database } from "../db/schema.js";
import type { Writer } from "../db/write.js";
import { concurrentUpdate, failedPrecondition, invalidArgument, notFound, permissionDenied } from "../errors.js";
import { DEFAULT_PAGE_SIZE, isUuid, requirePageSize, requireUuid } from "../validation.js";
import { type Consumer, ConsumerSchema } from "../gen/apikeys/v1/consumers_pb.js";
import type { ApiKey } from "../gen/apikeys/v1/resources_pb.js";
import { countKeysBy, deleteKeysOfConsumer, listKeyRecords } from "../keys/key.repository.js";
import { toApiKeyMessage } from "../keys/key-message.js";
import { findPolicy, lockPolicy } from "../policies/policy.repository.js";
import { toPolicyMessage } from "../policies/policy-message.js";
import { requireAdministrablePolicy } from "../policies/policy.service.js";
import * as repo from "./consumer.repository.js";

const MAX_USERNAME = 200;
const MAX_POLICIES_PER_CALL = 100;
// Keys fetched per query when listing all keys of a consumer.
const KEYS_BATCH = 1000;

/** Checks a new username: not empty, no whitespace or control characters, not UUID-shaped. */
export function requireUsername(value: string): string {
  if (value === "") throw invalidArgument("username is required");
  if (/[\s\u0000-\u001f\u007f]/.test(value)) throw invalidArgument("username must not contain whitespace or control characters");
  if ([...value].length > MAX_USERNAME) throw invalidArgument(`username must be at most ${MAX_USERNAME} characters`);
  // A UUID-shaped username would be ambiguous wherever a consumer is named by id or username.
  if (isUuid(value)) throw invalidArgument("username must not be shaped like a UUID");
  return value;
}

/** Checks a reference to an existing consumer: its id or its username. */
export function requireConsumerRef(field: string, value: string): string {
  if (value === "") throw invalidArgument(`${field} is required (id or username)`);
  if ([...value].length > MAX_USERNAME) throw invalidArgument(`${field} must be at most ${MAX_USERNAME} characters`);
  return value;
}

function requirePolicyIds(values: readonly string[]): string[] {
  if (values.length === 0) throw invalidArgument("policy_ids must name at least one policy");
  if (values.length > MAX_POLICIES_PER_CALL) throw invalidArgument(`policy_ids: at most ${MAX_POLICIES_PER_CALL} per call`);
  return [...new Set(values.map((v) => requireUuid("policy_ids", v)))];
}

async function toConsumerMessages(db: Kysely<Database> | Transaction<Database>, rows: repo.ConsumerRow[]): Promise<Consumer[]> {
  const grants = await repo.grantedPolicyIds(
    db,
    rows.map((r) => r.id),
  );
  const policies = new Map<string, Awaited<ReturnType<typeof findPolicy>>>();
  for (const id of new Set([...grants.values()].flat())) policies.set(id, await findPolicy(db, id));
  return rows.map((row) =>
    create(ConsumerSchema, {
      id: row.id,
      username: row.username,
      grantedPolicies: (grants.get(row.id) ?? []).flatMap((id) => {
        const policy = policies.get(id);
        return policy ? [toPolicyMessage(policy)] : [];
      }),
      createdOn: timestampFromDate(row.created_on),
      createdBy: row.created_by ?? "",
    }),
  );
}

async function mustFind(db: Kysely<Database> | Transaction<Database>, ref: string): Promise<repo.ConsumerRow> {
  const row = await repo.findConsumer(db, ref);
  if (row === undefined) throw notFound(`consumer ${ref} not found`);
  return row;
}

/** Refuses a consumer-scoped caller reading another consumer. */
function requireOwnConsumer(authority: Authority, row: repo.ConsumerRow): void {
  const scope = scopeOf(authority);
  if (scope === undefined || scope.id === row.id) return;
  throw permissionDenied(`your key belongs to consumer ${scope.username} and may read only that consumer`);
}

/** Creates a consumer; its username can never change. Consumer-scoped callers create none. */
export async function createConsumer(w: Writer, authority: Authority, rawUsername: string): Promise<Consumer> {
  requireUnscoped(authority, "creating a consumer");
  const username = requireUsername(rawUsername);
  const row = await repo.insertConsumer(w.tx, { username, created_by: actorKeyId(authority) });
  w.wrote(row.id);
  return (await toConsumerMessages(w.tx, [row]))[0]!;
}

/**
 * Reads a consumer by id or username, with all its keys (oldest first); a
 * consumer-scoped caller reads only its own consumer.
 */
export async function getConsumer(
  db: Kysely<Database>,
  authority: Authority,
  rawRef: string,
): Promise<{ consumer: Consumer; apiKeys: ApiKey[] }> {
  const ref = requireConsumerRef("consumer", rawRef);

  const row = await mustFind(db, ref);
  requireOwnConsumer(authority, row);
  const apiKeys: ApiKey[] = [];
  let after: { createdOn: Date; id: string } | undefined;
  for (;;) {
    const batch = await listKeyRecords(db, { limit: KEYS_BATCH, consumerId: row.id, after });
    apiKeys.push(...batch.map(toApiKeyMessage));
    const last = batch[batch.length - 1];
    if (batch.length < KEYS_BATCH || last === undefined) break;
    after = { createdOn: last.createdOn, id: last.id };
  }
  return { consumer: (await toConsumerMessages(db, [row]))[0]!, apiKeys };
}

const CONSUMER_ORDERS = {
  username: { expr: sql`c.username`, kind: "text", nullable: false },
  created_on: { expr: sql`c.created_on`, kind: "time", nullable: false },
} satisfies Record<string, SortColumn>;

function consumerCondition(term: FilterTerm): RawBuilder<SqlBool> {
  if (term.field === "policy") {
    const policy = isUuid(term.value)
      ? sql<SqlBool>`cp.policy_id = ${term.value.toLowerCase()}`
      : sql<SqlBool>`cp.policy_id = (select id from policies where name = ${term.value})`;
    return sql<SqlBool>`exists (select 1 from consumer_policies cp where cp.consumer_id = c.id and ${policy})`;
  }
  return sql<SqlBool>`c.username ilike ${containsPattern(term.value)}`;
}

/** Lists consumers (a consumer-scoped caller: only its own), paged, filtered and ordered (see AdminGetConsumersRequest). */
export async function listConsumers(
  db: Kysely<Database>,
  authority: Authority,
  req: { pageSize: number; pageToken: string; filter?: string; orderBy?: string },
): Promise<{ consumers: Consumer[]; nextPageToken: string; totalSize: number; apiKeyCounts: Record<string, number> }> {
  const limit = requirePageSize(req.pageSize, DEFAULT_PAGE_SIZE);
  const conditions = parseFilter(req.filter ?? "", ["username", "policy"]).map(consumerCondition);
  const scope = scopeOf(authority);
  if (scope !== undefined) conditions.push(sql<SqlBool>`c.id = ${scope.id}`);
  const ordering = parseOrderBy(req.orderBy ?? "", CONSUMER_ORDERS, "username");
  const digest = queryDigest(["consumers", req.filter ?? "", ordering.name, ordering.descending]);
  const after = req.pageToken === "" ? undefined : decodePageToken(req.pageToken, digest, ordering.column, isUuid);

  const { consumers, totalSize } = await repo.listConsumerPage(db, { limit: limit + 1, conditions, ordering, after });
  const page = consumers.slice(0, limit);
  const last = page[page.length - 1];
  return {
    consumers: await toConsumerMessages(
      db,
      page.map(({ consumer }) => consumer),
    ),
    nextPageToken: consumers.length > limit && last ? encodePageToken(digest, last.cursor) : "",
    totalSize,
    apiKeyCounts: await countKeysBy(
      db,
      "consumer_id",
      page.map(({ consumer }) => consumer.id),
    ),
  };
}

/**
 * Deletes a consumer and every key it holds, in one transaction; each key's
 * verdicts are invalidated. Its keys use only granted policies, so the caller
 * must hold the `apikeys:` permissions of every granted policy.
 */
export async function deleteConsumer(w: Writer, authority: Authority, rawRef: string): Promise<{ consumer: Consumer; deletedKeyIds: string[] }> {
  requireUnscoped(authority, "deleting a consumer");
  const ref = requireConsumerRef("consumer", rawRef);
  const { tx } = w;
  // The update lock waits for keys being created for this consumer, so none escapes the delete.
  const row = await repo.lockConsumer(tx, ref, "update");
  if (row === undefined) throw notFound(`consumer ${ref} not found`);
  for (const policyId of (await repo.grantedPolicyIds(tx, [row.id])).get(row.id) ?? []) {
    await requireAdministrablePolicy(tx, authority, policyId);
  }
  const before = (await toConsumerMessages(tx, [row]))[0]!;
  const keyIds = await deleteKeysOfConsumer(tx, row.id);
  for (const id of keyIds) await w.invalidate({ kind: "key", id });
  if (!(await repo.deleteConsumer(tx, row.id))) throw concurrentUpdate("consumer vanished during delete");
  w.wrote(row.id, ...keyIds);
  return { consumer: before, deletedKeyIds: keyIds };
}

/** Grants existing policies, each of whose `apikeys:` permissions the caller must hold, to a consumer. */
export async function grantPolicies(w: Writer, authority: Authority, req: { consumer: string; policyIds: string[] }): Promise<Consumer> {
  requireUnscoped(authority, "granting policies");
  const ref = requireConsumerRef("consumer", req.consumer);
  const policyIds = requirePolicyIds(req.policyIds);
  const { tx } = w;
  const row = await repo.lockConsumer(tx, ref, "share");
  if (row === undefined) throw notFound(`consumer ${ref} not found`);
  for (const id of policyIds) {
    if ((await lockPolicy(tx, id, "share")) === undefined) throw notFound(`policy ${id} not found`);
    await requireAdministrablePolicy(tx, authority, id);
  }
  await repo.grantPolicies(tx, row.id, policyIds);
  w.wrote(row.id, ...policyIds);
  return (await toConsumerMessages(tx, [row]))[0]!;
}

/**
 * Withdraws policy grants, each of whose `apikeys:` permissions the caller must
 * hold; refused while a key of the consumer uses one of them.
 */
export async function revokePolicies(w: Writer, authority: Authority, req: { consumer: string; policyIds: string[] }): Promise<Consumer> {
  requireUnscoped(authority, "revoking policies");
  const ref = requireConsumerRef("consumer", req.consumer);
  const policyIds = requirePolicyIds(req.policyIds);
  const { tx } = w;
  const row = await repo.lockConsumer(tx, ref, "share");
  if (row === undefined) throw notFound(`consumer ${ref} not found`);
  for (const id of policyIds) await requireAdministrablePolicy(tx, authority, id);
  const inUse = await repo.revokePolicies(tx, row.id, policyIds);
  if (inUse.length > 0) {
    throw failedPrecondition(
      `consumer ${row.username} has keys using these policies: ${inUse.map((k) => `${k.name} (${k.id})`).join(", ")}; move or delete them first`,
    );
  }
  w.wrote(row.id, ...policyIds);
  return (await toConsumerMessages(tx, [row]))[0]!;
}

/**
 * Inside a key write: resolves the key's consumer (share-locked, so it cannot be
 * deleted before the key commits) and checks the policy is granted to it.
 */
export async function requireGrantedPolicy(
  tx: Transaction<Database>,
  consumerRef: string,
  policyId: string,
): Promise<string> {
  const row = await repo.lockConsumer(tx, consumerRef, "share");
  if (row === undefined) throw notFound(`consumer ${consumerRef} not found`);
  if (!(await repo.lockGrant(tx, row.id, policyId))) {
    throw failedPrecondition(`policy ${policyId} is not granted to consumer ${row.username}; grant it with AdminGrantConsumerPolicies first`);
  }
  return row.id;
}
