/**
 * `@apikeys/client/grpc-js`: a `@grpc/grpc-js` server interceptor enforcing
 * each method's `(apikeys.v1.auth)` option, read from protobuf-es descriptors.
 */
import type { DescService } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import {
  Metadata,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  ServerInterceptingCall,
  status,
} from "@grpc/grpc-js";
import { authorize } from "./authorize.js";
import { tokenFromHeaderValues } from "./credentials.js";
import type { KeyVerifier } from "./key-verifier.js";
import { type MethodRequirement, methodRequirement } from "./requirements.js";
import type { VerifiedKey } from "./verification-cache.js";

export type { VerifiedKey } from "./verification-cache.js";

export interface ApiKeyInterceptorOptions {
  /** Shared by every server of the process (one invalidation stream, one cache). */
  verifier: KeyVerifier;
  /**
   * The services this server implements, as protobuf-es descriptors (e.g. from
   * `buf generate` with protoc-gen-es); calls to any other method are refused.
   */
  services: readonly DescService[];
  /** The caller's address, checked against keys limited to CIDRs. Default: the connection's peer. */
  clientIp?: ((call: ServerInterceptingCallInterface) => string | undefined) | undefined;
}

const keysByMetadata = new WeakMap<Metadata, VerifiedKey>();

/**
 * The key that authenticated a call, in its handler: `verifiedKeyOf(call.metadata)`.
 * Undefined for public methods.
 */
export function verifiedKeyOf(metadata: Metadata): VerifiedKey | undefined {
  return keysByMetadata.get(metadata);
}

/** "host:port" (as grpc-js reports a peer) → "host"; IPv4-mapped IPv6 → IPv4. */
function peerAddress(call: ServerInterceptingCallInterface): string | undefined {
  const peer = call.getPeer();
  if (peer === "unknown") return undefined;
  const host = /^(.*):\d+$/.exec(peer)?.[1] ?? peer;
  return host.startsWith("::ffff:") ? host.slice(7) : host;
}

function first(metadata: Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === "string" ? value : undefined;
}

/**
 * `new grpc.Server({ interceptors: [apiKeyInterceptor({ verifier, services })] })`:
 * answers UNAUTHENTICATED without a key or with a refused one, PERMISSION_DENIED
 * when the key lacks a permission or the method has no access rule, UNAVAILABLE
 * when apikeys cannot be asked; the handler runs only after the verdict.
 */
export function apiKeyInterceptor(options: ApiKeyInterceptorOptions): ServerInterceptor {
  const requirements = new Map<string, MethodRequirement>();
  for (const service of options.services) {
    for (const method of service.methods) requirements.set(`/${service.typeName}/${method.name}`, methodRequirement(method));
  }
  const clientIp = options.clientIp ?? peerAddress;
  return (methodDescriptor, call) => {
    const requirement = requirements.get(methodDescriptor.path) ?? { kind: "undeclared" };
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, proceed) {
            if (requirement.kind === "public") return proceed(metadata);
            authorize(
              options.verifier,
              requirement,
              () => tokenFromHeaderValues(first(metadata, "authorization"), first(metadata, "x-api-key")),
              clientIp(call),
              methodDescriptor.path,
            ).then(
              (key) => {
                if (key !== undefined) keysByMetadata.set(metadata, key);
                proceed(metadata);
              },
              (err: unknown) => {
                const error = ConnectError.from(err);
                // Connect's codes are gRPC's status codes.
                call.sendStatus({ code: error.code as number as status, details: error.rawMessage, metadata: new Metadata() });
              },
            );
          },
        });
      },
    });
  };
}
