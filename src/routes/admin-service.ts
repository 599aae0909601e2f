import type { ServiceImpl } from "@connectrpc/connect";
import { authenticatedKey } from "../auth/auth-context.js";
import type { AppContext } from "../context.js";
import { ApiKeysAdminService } from "../gen/apikeys/v1/admin_pb.js";
import * as keys from "../keys/key.service.js";
import { listPermissions } from "../permissions/permission.repository.js";
import { toPermissionMessage } from "../permissions/permission.service.js";
import * as policies from "../policies/policy.service.js";
import { toConnectError } from "../errors.js";

/** The admin-plane RPCs; the auth interceptor has already checked permissions. */
export function adminService(ctx: AppContext): ServiceImpl<typeof ApiKeysAdminService> {
  const tokens = { prefix: ctx.config.tokenPrefix, pepper: ctx.config.tokenPepper };
  return {
    async adminGetApiKeys(req) {
      return keys.listKeys(ctx.db, req);
    },
    async adminGetApiKey(req) {
      return { apiKey: await keys.getKey(ctx.db, req.id) };
    },
    async adminCreateApiKey(req, call) {
      const actor = call.values.get(authenticatedKey)?.id ?? null;
      return keys.createKey(ctx.db, tokens, req, actor);
    },
    async adminUpdateApiKey(req) {
      return { apiKey: await keys.updateKey(ctx.db, req) };
    },
    async adminRotateApiKey(req) {
      return keys.rotateKey(ctx.db, tokens, req.id, req.gracePeriod);
    },
    async adminDeleteApiKey(req) {
      return { apiKeyDeleted: await keys.deleteKey(ctx.db, req.id) };
    },
    async adminGetApiKeyPolicies() {
      return { policies: await policies.listPolicies(ctx.db) };
    },
    async adminCreateApiKeyPolicy(req, call) {
      const actor = call.values.get(authenticatedKey)?.id ?? null;
      return { policy: await policies.createPolicy(ctx.db, req, actor) };
    },
    async adminUpdateApiKeyPolicy(req) {
      return { policy: await policies.updatePolicy(ctx.db, req) };
    },
    async adminDeleteApiKeyPolicy(req) {
      const { policy, keysDeleted } = await policies.deletePolicy(ctx.db, req.id);
      return { policyDeleted: policy, apiKeysDeleted: keysDeleted };
    },
    async adminGetApiKeyPermissions() {
      try {
        return { permissions: (await listPermissions(ctx.db)).map(toPermissionMessage) };
      } catch (err) {
        throw toConnectError(err);
      }
    },
  };
}
