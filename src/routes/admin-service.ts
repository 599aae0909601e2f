import type { ServiceImpl } from "@connectrpc/connect";
import { authenticatedKey } from "../auth/auth-context.js";
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

/** The admin-plane RPCs; the auth interceptor has already checked permissions. */
export function adminService(ctx: AppContext): ServiceImpl<typeof ApiKeysAdminService> {
  const tokens = {
    prefix: ctx.config.tokenPrefix,
    pepper: ctx.config.tokenPepper,
    secrets: ctx.config.secretKey === undefined ? undefined : new SecretBox(ctx.config.secretKey),
  };
  return {
    async adminGetApiKeys(req) {
      return keys.listKeys(ctx.db, req);
    },
    async adminGetApiKey(req) {
      return { apiKey: await keys.getKey(ctx.db, req.id) };
    },
    async adminCreateApiKey(req, call) {
      const actor = call.values.get(authenticatedKey)?.id ?? null;
      const created = await keys.createKey(ctx.db, tokens, req, actor, auditHook(call.values));
      // The NOTIFY reaches this instance's cache a moment later; evict now so the caller reads its own write.
      ctx.verifier.invalidate({ kind: "key", id: created.apiKey.id });
      return created;
    },
    async adminUpdateApiKey(req, call) {
      const apiKey = await keys.updateKey(ctx.db, req, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "key", id: apiKey.id });
      return { apiKey };
    },
    async adminRotateApiKey(req, call) {
      const rotated = await keys.rotateKey(ctx.db, tokens, req.id, req.gracePeriod, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "key", id: rotated.apiKey.id });
      return rotated;
    },
    async adminRevokePreviousToken(req, call) {
      const apiKey = await keys.revokePreviousToken(ctx.db, req.id, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "key", id: apiKey.id });
      return { apiKey };
    },
    async adminDeleteApiKey(req, call) {
      const apiKeyDeleted = await keys.deleteKey(ctx.db, req.id, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "key", id: apiKeyDeleted.id });
      return { apiKeyDeleted };
    },
    async adminGetApiKeyPolicies(req) {
      return policies.listPolicies(ctx.db, req);
    },
    async adminCreateApiKeyPolicy(req, call) {
      const actor = call.values.get(authenticatedKey)?.id ?? null;
      return { policy: await policies.createPolicy(ctx.db, req, actor, auditHook(call.values)) };
    },
    async adminUpdateApiKeyPolicy(req, call) {
      const policy = await policies.updatePolicy(ctx.db, req, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "policy", id: policy.id });
      return { policy };
    },
    async adminDeleteApiKeyPolicy(req, call) {
      const { policy, keysDeleted } = await policies.deletePolicy(ctx.db, req.id, auditHook(call.values));
      ctx.verifier.invalidate({ kind: "policy", id: policy.id });
      return { policyDeleted: policy, apiKeysDeleted: keysDeleted };
    },
    async adminGetApiKeyPermissions() {
      return withConnectErrors(async () => ({ permissions: (await listPermissions(ctx.db)).map(toPermissionMessage) }));
    },
    async adminCreateConsumer(req, call) {
      const actor = call.values.get(authenticatedKey)?.id ?? null;
      return { consumer: await consumers.createConsumer(ctx.db, req.username, actor, auditHook(call.values)) };
    },
    async adminGetConsumer(req, call) {
      const found = await consumers.getConsumer(ctx.db, req.consumer);
      call.values.get(auditCall)?.addTargets([found.consumer.id]);
      return found;
    },
    async adminGetConsumers(req) {
      return consumers.listConsumers(ctx.db, req);
    },
    async adminDeleteConsumer(req, call) {
      const { consumer, deletedKeyIds } = await consumers.deleteConsumer(ctx.db, req.consumer, auditHook(call.values));
      // As for keys: evict here at once rather than when this instance's NOTIFY arrives.
      for (const id of deletedKeyIds) ctx.verifier.invalidate({ kind: "key", id });
      return { consumerDeleted: consumer, apiKeysDeleted: deletedKeyIds.length };
    },
    async adminGrantConsumerPolicies(req, call) {
      return { consumer: await consumers.grantPolicies(ctx.db, req, auditHook(call.values)) };
    },
    async adminRevokeConsumerPolicies(req, call) {
      return { consumer: await consumers.revokePolicies(ctx.db, req, auditHook(call.values)) };
    },
    async adminGetAuditEvents(req) {
      return getAuditEvents(ctx.db, req);
    },
  };
}
