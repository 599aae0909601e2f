/**
 * `@apikeys/client/services`: the generated apikeys services and messages alone,
 * free of Node APIs, for browsers (e.g. with @connectrpc/connect-web).
 */
export * from "./gen/apikeys/v1/admin_pb.js";
export * from "./gen/apikeys/v1/api_keys_pb.js";
export * from "./gen/apikeys/v1/audit_pb.js";
export * from "./gen/apikeys/v1/consumers_pb.js";
export * from "./gen/apikeys/v1/options_pb.js";
export * from "./gen/apikeys/v1/resources_pb.js";
