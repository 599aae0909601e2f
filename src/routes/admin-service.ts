import type { ServiceImpl } from "@connectrpc/connect";
import { auditCall } from "../audit/audit-call.js";
import { getAuditEvents } from "../audit/audit.service.js";
import { authorityOf, requireUnscoped } from "../auth/authority.js";
import * as consumers from "../consumers/consumer.service.js";
import type { AppContext } from "../context.js";
import { write } from "../db/write.js";
import type { ApiKeysAdminService } from "../gen/apikeys/v1/admin_pb.js";
import * as keyReads from "../keys/key-reads.js";
import * as keys from "../keys/key.service.js";
import { listPermissions } from "../permissions/permission.repository.js";
import { toPermissionMessage } from "../permissions/permission.service.js";
import * as policies from "../policies/policy.service.js";
import { getKeyUsage } from "../usage/usage.service.js";

/**
 * The admin-plane RPCs: each maps its request to a domain call and the result to
 * its response. The auth interceptor has already checked each method's
 * permission; the domain services apply the no-escalation and consumer-scope
 * rules to the caller's authority. Every write goes through `write`, which
 * commits the change, its invalidations and the audit success row together and
 * evicts this instance's cache after the commit.
 */
export function adminService(ctx: AppContext): ServiceImpl<typeof ApiKeysAdminService> {
  const { tokens } = ctx;
  return {
    async adminGetApiKeys(req, call) {
      return keyReads.listKeys(ctx.db, authorityOf(call.values), req);
    },
    async adminGetApiKey(req, call) {
      return { apiKey: await keyReads.getKey(ctx.db, authorityOf(call.values), req.id) };
    },
    async adminGetApiKeyUsage(req, call) {
      return getKeyUsage(ctx.db, authorityOf(call.values), req, Date.now());
    },
    async adminCreateApiKey(req, call) {
      return write(ctx, call, (w) => keys.createKey(w, tokens, authorityOf(call.values), req));
    },
    async adminUpdateApiKey(req, call) {
      return { apiKey: await write(ctx, call, (w) => keys.updateKey(w, authorityOf(call.values), req)) };
    },
    async adminRotateApiKey(req, call) {
      return write(ctx, call, (w) => keys.rotateKey(w, tokens, authorityOf(call.values), req.id, req.gracePeriod));
    },
    async adminRevokePreviousToken(req, call) {
      return { apiKey: await write(ctx, call, (w) => keys.revokePreviousToken(w, authorityOf(call.values), req.id)) };
    },
    async adminDeleteApiKey(req, call) {
      return { apiKeyDeleted: await write(ctx, call, (w) => keys.deleteKey(w, authorityOf(call.values), req.id)) };
    },
    async adminGetApiKeyPolicies(req, call) {
      return policies.listPolicies(ctx.db, authorityOf(call.values), req);
    },
    async adminCreateApiKeyPolicy(req, call) {
      return { policy: await write(ctx, call, (w) => policies.createPolicy(w, authorityOf(call.values), req)) };
    },
    async adminUpdateApiKeyPolicy(req, call) {
      return { policy: await write(ctx, call, (w) => policies.updatePolicy(w, authorityOf(call.values), req)) };
    },
    async adminDeleteApiKeyPolicy(req, call) {
      const { policy, keysDeleted } = await write(ctx, call, (w) => policies.deletePolicy(w, authorityOf(call.values), req.id));
      return { policyDeleted: policy, apiKeysDeleted: keysDeleted };
    },
    async adminGetApiKeyPermissions() {
      return { permissions: (await listPermissions(ctx.db)).map(toPermissionMessage) };
    },
    async adminCreateConsumer(req, call) {
      return { consumer: await write(ctx, call, (w) => consumers.createConsumer(w, authorityOf(call.values), req.username)) };
    },
    async adminGetConsumer(req, call) {
      const found = await consumers.getConsumer(ctx.db, authorityOf(call.values), req.consumer);
      call.values.get(auditCall)?.addTargets([found.consumer.id]);
      return found;
    },
    async adminGetConsumers(req, call) {
      return consumers.listConsumers(ctx.db, authorityOf(call.values), req);
    },
    async adminDeleteConsumer(req, call) {
      const { consumer, deletedKeyIds } = await write(ctx, call, (w) => consumers.deleteConsumer(w, authorityOf(call.values), req.consumer));
      return { consumerDeleted: consumer, apiKeysDeleted: deletedKeyIds.length };
    },
    async adminGrantConsumerPolicies(req, call) {
      return { consumer: await write(ctx, call, (w) => consumers.grantPolicies(w, authorityOf(call.values), req)) };
    },
    async adminRevokeConsumerPolicies(req, call) {
      return { consumer: await write(ctx, call, (w) => consumers.revokePolicies(w, authorityOf(call.values), req)) };
    },
    async adminGetAuditEvents(req, call) {
      // The log names every consumer's keys and calls: not for a key confined to one consumer.
      requireUnscoped(authorityOf(call.values), "reading the audit log");
      return getAuditEvents(ctx.db, req, ctx.limits.auditRequestMaxBytes);
    },
  };
}
