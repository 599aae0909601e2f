import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { isIP } from "node:net";
import { sql } from "kysely";
import { authenticatedKey } from "../auth/auth-context.js";
import { invalidArgument } from "../errors.js";
import type { AppContext } from "../context.js";
import {
  ApiKeysService,
  ComponentHealthSchema,
  VerifyCode,
} from "../gen/apikeys/v1/api_keys_pb.js";
import { toApiKeyMessage } from "../keys/key.service.js";
import { requirePermissionNames } from "../permissions/permission-name.js";
import { OWN_SERVICE, registerPermissions, toPermissionMessage } from "../permissions/permission.service.js";

const HEALTH_TIMEOUT_MS = 2_000;

/** The data-plane RPCs. */
export function apiKeysService(ctx: AppContext): ServiceImpl<typeof ApiKeysService> {
  return {
    async verifyToken(req) {
      const allOf = requirePermissionNames("all_of", req.allOf);
      const anyOf = requirePermissionNames("any_of", req.anyOf);
      if (req.clientIp !== "" && isIP(req.clientIp) === 0) {
        throw invalidArgument(`client_ip must be an IPv4 or IPv6 address, got "${req.clientIp.slice(0, 64)}"`);
      }
      const verdict = await ctx.verifier.verify(req.token, allOf, anyOf);
      return {
        valid: verdict.code === VerifyCode.VALID,
        code: verdict.code,
        apiKey: verdict.key && toApiKeyMessage(verdict.key),
        permissions: verdict.key?.policy.permissions ?? [],
        missing: verdict.missing,
        cacheTtl: durationFromMs(ctx.config.verdictTtlMs),
      };
    },

    async registerPermissions(req) {
      if (req.service === OWN_SERVICE) {
        throw new ConnectError(`the "${OWN_SERVICE}" namespace belongs to this service`, Code.PermissionDenied);
      }
      const rows = await registerPermissions(ctx.db, req.service, req.permissions);
      return { permissions: rows.map(toPermissionMessage) };
    },

    async testApiKey(_req, call) {
      const key = call.values.get(authenticatedKey);
      if (key === undefined) throw new ConnectError("no API key", Code.Unauthenticated);
      return { apiKey: toApiKeyMessage(key), permissions: key.policy.permissions };
    },

    async getServiceHealth() {
      const database = await checkDatabase(ctx);
      const cache = create(ComponentHealthSchema, {
        name: "cache",
        healthy: ctx.verifier.isListening,
        message: ctx.verifier.isListening
          ? `${ctx.verifier.cache.size} entries, invalidations live`
          : "invalidation listener down: verifying without cache",
      });
      return { healthy: database.healthy && cache.healthy, components: [database, cache] };
    },
  };
}

async function checkDatabase(ctx: AppContext) {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      sql`select 1`.execute(ctx.db),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${HEALTH_TIMEOUT_MS} ms`)), HEALTH_TIMEOUT_MS);
      }),
    ]);
    return create(ComponentHealthSchema, { name: "database", healthy: true, message: ctx.databaseKind });
  } catch (err) {
    return create(ComponentHealthSchema, { name: "database", healthy: false, message: (err as Error).message });
  } finally {
    clearTimeout(timer);
  }
}
