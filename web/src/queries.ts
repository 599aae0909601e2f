import { useQuery } from "@tanstack/react-query";
import { adminClient, listAllConsumers } from "./api.js";

/** How many keys a confirmation lists by name; the rest are counted. */
export const LISTED_KEYS = 10;

/**
 * The first keys of a policy or consumer and how many it has in all, counted
 * fresh when a confirmation opens; `enabled: false` keeps what was fetched.
 */
export function useKeyPreview(filter: { policyId?: string; consumer?: string }, enabled = true) {
  return useQuery({
    queryKey: ["api-keys", "preview", filter],
    queryFn: () => adminClient.adminGetApiKeys({ ...filter, pageSize: LISTED_KEYS }),
    refetchOnMount: "always",
    enabled,
  });
}

/** All consumers with their key counts, for their page and the key form's dropdown. */
export function useAllConsumers() {
  return useQuery({ queryKey: ["consumers"], queryFn: listAllConsumers });
}
