import { createContextKey } from "@connectrpc/connect";
import type { KeyRecord } from "../verify/verdict-cache.js";

/** The verified key of the current call; undefined for public methods. */
export const authenticatedKey = createContextKey<KeyRecord | undefined>(undefined, {
  description: "API key that authenticated the call",
});
