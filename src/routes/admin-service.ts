import type { ServiceImpl } from "@connectrpc/connect";
import { authorityOf, requireUnscoped } from "../auth/authority.js";
import type { AppContext } from "../context.js";
import { ApiKeysAdminService } from "../gen/apikeys/v1/admin_pb.js";
import * as keys from "../keys/key.service.js";
import { listPermissions } from "../permissions/permission.repository.js";
import { toPermissionMessage } from "../permissions/permission.service.js";
import * as policies from "../policies/policy.service.js";
import { withConnectErrors } from "../errors.js";
import { auditCall, auditHook } from "../audit/audit-call.js";
import { getAuditEvents } from "../audit/audit.service.js";
import * as consumers from "../consumers/consumer.service.js";
import { SecretBox } from "../jwt/secret-box.js";
import { getKeyUsage } from "../usage/usage.service.js";

/**
 * The admin-plane RPCs. The auth interceptor has already checked each method's
 * permission; the domain services apply the no-escalation and consumer-scope
 * rules to the caller's authority.
 */
export function adminService(ctx: AppContext): ServiceImpl<typeof ApiKeysAdminService> {
  const tokens = {
    prefix: ctx.config.tokenPrefix,
    pepper: ctx.config.tokenPepper,
    secrets: ctx.config.secretKey === undefined ? undefined : new SecretBox(ctx.config.secretKey),
  };
  return {
    async adminGetApiKeys(req, call) {
      return keys.listKeys(ctx.db, authorityOf(call.values), req);
    },
    async adminGetApiKey(req, call) {
      return { apiKey: await keys.getKey(ctx.db, authorityOf(call.values), req.id) };
    },
    async adminGetApiKeyUsage(req, call) {
      return getKeyUsage(ctx.db, authorityOf(call.values), req, Date.now());
    },
    async adminCreateApiKey(req, call) {
      const created = await keys.createKey(ctx.db, tokens, req, authorityOf(call.values), auditHook(call.values));
      // The NOTIFY reaches this instance's cache a moment later; evict now so the caller reads its own write.
      ctx.verifier.invalidate({ kind: "key", id: created.apiKey.id });
      return created;
    },
    async adminUpdateApiKey(req, call) {
      const apiKey = await keys.updateKey(ctx.db, authorityOf(call.values), req, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "key", id: apiKey.id });
      return { apiKey };
    },
    async adminRotateApiKey(req, call) {
      const rotated = await keys.rotateKey(ctx.db, tokens, authorityOf(call.values), req.id, req.gracePeriod, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "key", id: rotated.apiKey.id });
      return rotated;
    },
    async adminRevokePreviousToken(req, call) {
      const apiKey = await keys.revokePreviousToken(ctx.db, authorityOf(call.values), req.id, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "key", id: apiKey.id });
      return { apiKey };
    },
    async adminDeleteApiKey(req, call) {
      const apiKeyDeleted = await keys.deleteKey(ctx.db, authorityOf(call.values), req.id, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "key", id: apiKeyDeleted.id });
      return { apiKeyDeleted };
    },
    async adminGetApiKeyPolicies(req, call) {
      return policies.listPolicies(ctx.db, authorityOf(call.values), req);
    },
    async adminCreateApiKeyPolicy(req, call) {
      return { policy: await policies.createPolicy(ctx.db, req, authorityOf(call.values), auditHook(call.values)) };
    },
    async adminUpdateApiKeyPolicy(req, call) {
      const policy = await policies.updatePolicy(ctx.db, authorityOf(call.values), req, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "policy", id: policy.id });
      return { policy };
    },
    async adminDeleteApiKeyPolicy(req, call) {
      const { policy, keysDeleted } = await policies.deletePolicy(ctx.db, authorityOf(call.values), req.id, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "policy", id: policy.id });
      return { policyDeleted: policy, apiKeysDeleted: keysDeleted };
    },
    async adminGetApiKeyPermissions() {
      return withConnectErrors(async () => ({ permissions: (await listPermissions(ctx.db)).map(toPermissionMessage) }));
    },
    async adminCreateConsumer(req, call) {
      return { consumer: await consumers.createConsumer(ctx.db, req.username, authorityOf(call.values), auditHook(call.values)) };
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
      const { consumer, deletedKeyIds } = await consumers.deleteConsumer(ctx.db, authorityOf(call.values), req.consumer, auditHook(call.values));
      // As for keys: evict here at once rather than when this instance's NOTIFY arrives.
      for (const id of deletedKeyIds) ctx.verifier.invalidate({ kind: "key", id });
      return { consumerDeleted: consumer, apiKeysDeleted: deletedKeyIds.length };
    },
    async adminGrantConsumerPolicies(req, call) {
      return { consumer: await consumers.grantPolicies(ctx.db, authorityOf(call.values), req, auditHook(call.values)) };
    },
    async adminRevokeConsumerPolicies(req, call) {
      return { consumer: await consumers.revokePolicies(ctx.db, authorityOf(call.values), req, auditHook(call.values)) };
    },
    async adminGetAuditEvents(req, call) {
      // The log names every consumer's keys and calls: not for a key confined to one consumer.
      requireUnscoped(authorityOf(call.values), "reading the audit log");
      return getAuditEvents(ctx.db, req, ctx.config.auditRequestMaxBytes);
    },
  };
}
