import { type ContextValues, createContextKey, createContextValues } from "@connectrpc/connect";
import type { KeyRecord } from "../keys/key-record.js";

/** The verified key of the current call; undefined for public methods. */
export const authenticatedKey = createContextKey<KeyRecord | undefined>(undefined, {
  description: "API key that authenticated the call",
});

/** The address of the peer that sent the call ("" when unknown, e.g. in-process). */
export const peerAddress = createContextKey<string>("", {
  description: "remote address of the connection that carried the call",
});

/** Context values for a request from a Node server: its peer's address. */
export function peerContextValues(req: { socket?: { remoteAddress?: string } | null }): ContextValues {
  return createContextValues().set(peerAddress, req.socket?.remoteAddress ?? "");
}
