import { create } from "@bufbuild/protobuf";
import { type Duration, durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { isIP } from "node:net";
import type { DescMethod } from "@bufbuild/protobuf";
import { authenticatedKey, peerAddress } from "../auth/auth-context.js";
import { authorityOf, scopeOf } from "../auth/authority.js";
import { REFUSALS, tokenFromHeaders } from "@apikeys/client";
import { isGuess } from "../interceptors/auth.js";
import { methodRequirement } from "../permissions/declarations.js";
import { invalidArgument } from "../errors.js";
import type { AppContext } from "../context.js";
import { successRecorder, write } from "../db/write.js";
import {
  ApiKeysService,
  ComponentHealthSchema,
  InvalidationKind,
  type TestApiKeyResponse,
  TestApiKeyResponseSchema,
  VerifyCode,
  type VerifyTokenResponse,
  VerifyTokenResponseSchema,
  WatchInvalidationsResponseSchema,
} from "../gen/apikeys/v1/api_keys_pb.js";
import type { Verdict } from "../verify/verifier.js";
import { toApiKeyMessage } from "../keys/key-message.js";
import { reportLeakedToken } from "../keys/leaked-token.js";
import { recordChange } from "../audit/audit-call.js";
import { requirePermissionNames } from "../permissions/permission-name.js";
import { registerPermissions, toPermissionMessage } from "../permissions/permission.service.js";
import type { KeyRecord } from "../keys/key-record.js";
import { requireCost } from "../keys/refill.js";

/** Idle streams carry a heartbeat this often, so clients notice a dead connection. */
const WATCH_HEARTBEAT_MS = 15_000;

/** The data-plane RPCs. */
export function apiKeysService(ctx: AppContext): ServiceImpl<typeof ApiKeysService> {
  const verdictTtl = durationFromMs(ctx.limits.verdictTtlMs);
  const responses = verdictResponses(verdictTtl);
  const testResponses = new WeakMap<KeyRecord, { full?: TestApiKeyResponse; redacted?: TestApiKeyResponse }>();
  return {
    // Not async: a cached key's verdict is answered without a promise (Verifier.verify).
    verifyToken(req, call) {
      const allOf = requirePermissionNames("all_of", req.allOf);
      const anyOf = requirePermissionNames("any_of", req.anyOf);
      if (req.clientIp !== "" && isIP(req.clientIp) === 0) {
        throw invalidArgument(`client_ip must be an IPv4 or IPv6 address, got "${req.clientIp.slice(0, 64)}"`);
      }
      // Guessing tokens through a service that calls us is throttled per calling key and the client_ip it
      // names: a caller can only ever block its own answers for that address, never anyone's own calls to us.
      const guesser = req.clientIp === "" ? "" : `${call.values.get(authenticatedKey)?.id ?? ""} ${req.clientIp}`;
      if (ctx.verifier.verifyGuesses.retryAfterMs(guesser) > 0) return responses.rateLimited;
      const cost = requireCost(req.cost);
      const verdict = ctx.verifier.verify(req.token, allOf, anyOf, req.clientIp, cost);
      return verdict instanceof Promise ? verdict.then((v) => answerVerdict(ctx, responses, guesser, v)) : answerVerdict(ctx, responses, guesser, verdict);
    },

    async reportLeakedToken(req, call) {
      const actorKeyId = call.values.get(authenticatedKey)?.id ?? null;
      // A data-plane call, so no audit interceptor: a key the report disabled is recorded as a change
      // with it, naming the key but, like the answer, never holding the token.
      call.values.set(successRecorder, async (tx, targetIds) => {
        if (targetIds.length === 0) return;
        await recordChange(tx, { rpc: `${ApiKeysService.typeName}/ReportLeakedToken`, actorKeyId, targetIds, request: { sourceUrl: req.sourceUrl } });
      });
      return write(ctx, call, (w) => reportLeakedToken(w, ctx.tokens, req));
    },

    async registerPermissions(req, call) {
      const rows = await write(ctx, call, (w) => registerPermissions(w, authorityOf(call.values), req.service, req.permissions));
      return { permissions: rows.map(toPermissionMessage) };
    },

    async *watchInvalidations(_req, call) {
      const key = call.values.get(authenticatedKey);
      if (key === undefined) throw new ConnectError("no API key", Code.Unauthenticated);
      const peer = call.values.get(peerAddress);
      const release = ctx.streamCaps.acquire("WatchInvalidations", [
        { kind: "key", id: key.id, max: ctx.limits.maxWatchStreamsPerKey },
        { kind: "address", id: peer, max: ctx.limits.maxWatchStreamsPerAddress },
      ]);
      try {
        const subscription = ctx.invalidations.subscribe(call.signal);
        yield create(WatchInvalidationsResponseSchema, {
          event: { case: "resync", value: { heartbeatInterval: durationFromMs(WATCH_HEARTBEAT_MS) } },
        });
        for (;;) {
          const next = await subscription.next(WATCH_HEARTBEAT_MS);
          if (next === undefined) {
            if (key.expiresOn !== null && key.expiresOn.getTime() <= Date.now()) {
              throw new ConnectError(REFUSALS[VerifyCode.EXPIRED]!, Code.Unauthenticated);
            }
            yield create(WatchInvalidationsResponseSchema, { event: { case: "heartbeat", value: {} } });
          } else {
            const kind = next.kind === "key" ? InvalidationKind.KEY : InvalidationKind.POLICY;
            yield create(WatchInvalidationsResponseSchema, { event: { case: "invalidation", value: { kind, id: next.id } } });
            // The stream's own key or policy changed: it lives only as long as its key still may open it.
            if ((next.kind === "key" && next.id === key.id) || (next.kind === "policy" && next.id === key.policy.id)) {
              await requireStillAuthorized(ctx, call.requestHeader, call.method, peer);
            }
          }
        }
      } finally {
        release();
      }
    },

    testApiKey(_req, call) {
      const key = call.values.get(authenticatedKey);
      if (key === undefined) throw new ConnectError("no API key", Code.Unauthenticated);
      // createdBy names other keys (who made this key and its policy): only for callers who may read any key.
      const authority = authorityOf(call.values);
      const readsAllKeys = authority.kind === "key" && authority.adminPermissions.has("apikeys:keys.read") && scopeOf(authority) === undefined;
      let cached = testResponses.get(key);
      if (cached === undefined) testResponses.set(key, (cached = {}));
      const variant = readsAllKeys ? "full" : "redacted";
      let response = cached[variant];
      if (response === undefined) {
        const apiKey = toApiKeyMessage(key);
        if (!readsAllKeys) {
          apiKey.createdBy = "";
          if (apiKey.policy !== undefined) apiKey.policy.createdBy = "";
        }
        response = cached[variant] = create(TestApiKeyResponseSchema, { apiKey, permissions: key.policy.permissions });
      }
      return response;
    },

    async getServiceHealth() {
      const database = await ctx.checkDatabase();
      const cache = create(ComponentHealthSchema, {
        name: "cache",
        healthy: ctx.verifier.isListening,
        message: ctx.verifier.isListening
          ? `${ctx.verifier.cache.size} entries, invalidations live`
          : "invalidation listener down: verifying without cache",
      });
      const limits = ctx.verifier.rateLimitHealth();
      const rateLimits = create(ComponentHealthSchema, { name: "rate_limits", ...limits });
      return { healthy: database.healthy && cache.healthy && rateLimits.healthy, components: [database, cache, rateLimits] };
    },
  };
}

/** VerifyToken's answer to a verdict; a guessed token counts against the caller and the client_ip it named. */
function answerVerdict(ctx: AppContext, responses: ReturnType<typeof verdictResponses>, guesser: string, verdict: Verdict): VerifyTokenResponse {
  if (isGuess(verdict.code)) ctx.verifier.verifyGuesses.recordFailure(guesser);
  return responses.of(verdict);
}

/** Most distinct verdicts (code and missing permissions) kept per key version; more are rebuilt each time. */
const VERDICTS_PER_KEY = 32;

/**
 * VerifyToken responses, one message object per key version and verdict. Key
 * records are immutable (a change loads a new one), so a response built from one
 * stays right for as long as the record is cached, and the fast path can keep its
 * encoded bytes with it (see http/fast-path/response-bytes.ts).
 */
function verdictResponses(cacheTtl: Duration) {
  const byKey = new WeakMap<KeyRecord, Map<string, VerifyTokenResponse>>();
  const keyless = new Map<VerifyCode, VerifyTokenResponse>();
  const build = (verdict: Verdict, apiKey = verdict.key && toApiKeyMessage(verdict.key)) =>
    create(VerifyTokenResponseSchema, {
      valid: verdict.code === VerifyCode.VALID,
      code: verdict.code,
      apiKey,
      permissions: verdict.key?.policy.permissions ?? [],
      missing: verdict.missing,
      cacheTtl,
      environment: verdict.key?.environment,
      remaining: verdict.remaining === undefined ? undefined : BigInt(verdict.remaining),
    });
  return {
    rateLimited: create(VerifyTokenResponseSchema, { valid: false, code: VerifyCode.RATE_LIMITED, permissions: [], missing: [], cacheTtl: durationFromMs(0) }),
    of(verdict: Verdict): VerifyTokenResponse {
      const key = verdict.key;
      if (key === undefined) {
        if (verdict.missing.length > 0) return build(verdict);
        let response = keyless.get(verdict.code);
        if (response === undefined) keyless.set(verdict.code, (response = build(verdict)));
        return response;
      }
      // A key with credits answers with what is left after this very call: never a shared answer.
      if (key.remaining !== null || verdict.remaining !== undefined) return build(verdict);
      let verdicts = byKey.get(key);
      if (verdicts === undefined) byKey.set(key, (verdicts = new Map()));
      const signature = `${verdict.code} ${verdict.missing.join(" ")}`;
      let response = verdicts.get(signature);
      if (response === undefined) {
        if (verdicts.size >= VERDICTS_PER_KEY) return build(verdict);
        // Verdicts of one key share its ApiKey message.
        response = build(verdict, verdicts.values().next().value?.apiKey);
        verdicts.set(signature, response);
      }
      return response;
    },
  };
}

/** Throws what the auth interceptor would answer now if the call's credential is no longer good for `method`. */
async function requireStillAuthorized(ctx: AppContext, header: Headers, method: DescMethod, peer: string): Promise<void> {
  const token = tokenFromHeaders(header);
  if (token === undefined) throw new ConnectError("missing API key", Code.Unauthenticated);
  const requirement = methodRequirement(method);
  const [allOf, anyOf] = requirement.kind === "permissions" ? [requirement.allOf, requirement.anyOf] : [[], []];
  // Re-checking an open stream spends no credits (but needs one left).
  const verdict = await ctx.verifier.verify(token, allOf, anyOf, peer, 0);
  if (verdict.code === VerifyCode.VALID) return;
  if (verdict.code === VerifyCode.INSUFFICIENT_PERMISSIONS) {
    throw new ConnectError(`API key lacks permission ${verdict.missing.join(", ")}`, Code.PermissionDenied);
  }
  throw new ConnectError(REFUSALS[verdict.code] ?? "invalid API key", Code.Unauthenticated);
}
