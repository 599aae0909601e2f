/**
 * The apikeys SDK: typed clients, permission registration from proto options,
 * and a Connect interceptor that verifies keys in-process.
 */
export { type ApiKeyAuth, type ApiKeyAuthOptions, apiKeyAuth, clientAddress, clientAddressContext, verifiedKey } from "./auth.js";
export { type ApiKeysClients, type ClientOptions, createApiKeysClients, retryIdempotent } from "./clients.js";
export { KeyVerifier, type KeyVerifierOptions, type VerifierEvent, missingPermissions } from "./key-verifier.js";
export { AuthOptionsError, type CheckOptions, assertAuthOptions, registerPermissions } from "./permissions.js";
export { type TemplateEnvironment, TemplateError, renderTemplate } from "./render-template.js";
export type { TokenVerdict, VerifiedKey } from "./verification-cache.js";
export { ApiKeysAdminService } from "../gen/apikeys/v1/admin_pb.js";
export { ApiKeysService, InvalidationKind, VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
export { auth, permissions } from "../gen/apikeys/v1/options_pb.js";
