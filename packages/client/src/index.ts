/**
 * The apikeys SDK: typed clients, permission registration from proto options or
 * plain declarations, and in-process key verification with a Connect interceptor.
 * Adapters: `@apikeys/client/express`, `/fastify`, `/grpc-js`; browser-safe
 * generated code alone: `@apikeys/client/services`.
 */
export { type ApiKeyAuth, type ApiKeyAuthOptions, apiKeyAuth, clientAddress, clientAddressContext, verifiedKey } from "./auth.js";
export { type ApiKeysClients, type ClientOptions, createApiKeysClients, retryIdempotent } from "./clients.js";
export { KeyVerifier, type KeyVerifierOptions, type VerifierEvent, missingPermissions } from "./key-verifier.js";
export { AuthOptionsError, type CheckOptions, assertAuthOptions, registerPermissions } from "./permissions.js";
export { type TemplateEnvironment, TemplateError, renderTemplate } from "./render-template.js";
export { type TokenVerdict, type VerifiedKey, VerificationCache } from "./verification-cache.js";
export { ApiKeysAdminService } from "./gen/apikeys/v1/admin_pb.js";
export { ApiKeysService, InvalidationKind, VerifyCode } from "./gen/apikeys/v1/api_keys_pb.js";
export { auth, permissions } from "./gen/apikeys/v1/options_pb.js";
// Building blocks for adapters to other frameworks; the apikeys server uses the same.
export { authorize, requirementOf } from "./authorize.js";
export { MISSING_KEY, REFUSALS, lacksPermissions, tokenFromHeaderValues, tokenFromHeaders } from "./credentials.js";
export {
  type MethodRequirement,
  type PermissionDeclarations,
  checkAuthOptions,
  declaredPermissions,
  isValidPart,
  methodRequirement,
  splitPermission,
} from "./requirements.js";
export { SECRET_LENGTH, generateToken, parseToken } from "./token-format.js";
