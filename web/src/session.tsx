import { useQuery } from "@connectrpc/connect-query";
import { Code, ConnectError } from "@connectrpc/connect";
import { type QueryClient, useQueryClient } from "@tanstack/react-query";
import { useSyncExternalStore } from "react";
import { ApiKeysService } from "../../src/gen/apikeys/v1/api_keys_pb.js";

/**
 * Who is signed in, as the server sees the token: TestApiKey describes the key
 * and its permissions, so the UI can mark the key as "you" and disable what it
 * may not do, naming the permission, before anyone clicks.
 */
export function useSelf() {
  const self = useQuery(ApiKeysService.method.testApiKey, {}, { staleTime: Infinity, refetchOnMount: false });
  const permissions = new Set(self.data?.permissions ?? []);
  const key = self.data?.apiKey;
  return {
    keyId: key?.id,
    keyName: key?.name,
    // The bootstrap key is the one no admin created.
    isBootstrap: key !== undefined && key.createdBy === "",
    /** Undefined while loading: nothing is disabled before the answer is known. */
    lacks(permission: string): string | undefined {
      if (self.data === undefined || permissions.has(permission)) return undefined;
      return `Your key lacks ${permission}`;
    },
  };
}

// Whether the last call could reach the server; every query and mutation reports here.
let reachable = true;
const listeners = new Set<() => void>();

function setReachable(value: boolean): void {
  if (value === reachable) return;
  reachable = value;
  for (const listener of listeners) listener();
}

/** A failure that never reached the server (network down, server stopped) rather than one it answered. */
export function isUnreachable(err: unknown): boolean {
  const e = ConnectError.from(err);
  return e.code === Code.Unavailable || (e.code === Code.Unknown && /fetch|network/i.test(e.rawMessage));
}

/** Records each call's outcome: an unreachable server marks the app offline until a call succeeds. */
export function reportCall(err: unknown | undefined): void {
  setReachable(err === undefined || !isUnreachable(err));
}

/** True while the server cannot be reached; writes are disabled and a banner offers Retry. */
export function useOffline(): boolean {
  return !useSyncExternalStore(
    (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    () => reachable,
  );
}

/** Refetches what is on screen; the first success clears the offline state. */
export function retryNow(queryClient: QueryClient): Promise<void> {
  return queryClient.refetchQueries({ type: "active" });
}

/** Invalidates only the queries of these admin methods, so a write refetches what it touched and nothing else. */
export function useInvalidate(): (...methodNames: string[]) => Promise<void> {
  const queryClient = useQueryClient();
  return (...methodNames) =>
    queryClient.invalidateQueries({
      predicate: (query) => {
        const key = query.queryKey[1] as { methodName?: string } | undefined;
        const name = typeof query.queryKey[0] === "string" && query.queryKey[0] !== "connect-query" ? query.queryKey[0] : key?.methodName;
        return name !== undefined && methodNames.includes(name);
      },
    });
}
