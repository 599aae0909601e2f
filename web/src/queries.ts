import { useQuery } from "@tanstack/react-query";
import { listAllConsumers, listAllKeys } from "./api.js";

/**
 * All keys (or one policy's or consumer's); `fresh` refetches on mount even when
 * the cache is recent; `enabled: false` keeps what was fetched and fetches no more.
 */
export function useAllKeys(filter: { policyId?: string; consumer?: string } = {}, fresh = false, enabled = true) {
  return useQuery({
    queryKey: ["api-keys", filter],
    queryFn: () => listAllKeys(filter),
    refetchOnMount: fresh ? "always" : true,
    enabled,
  });
}

/** All consumers, for their page and the key form's dropdown. */
export function useAllConsumers() {
  return useQuery({ queryKey: ["consumers"], queryFn: listAllConsumers });
}
