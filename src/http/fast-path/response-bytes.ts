import type { Message } from "@bufbuild/protobuf";
import type { Serialization } from "@connectrpc/connect/protocol";

/** How a response message goes on the wire: a gRPC envelope, Connect binary, Connect JSON. */
export type WireFormat = "grpc" | "proto" | "json";

/**
 * Encoded bytes per response message object. The handlers hand out one message
 * object per key version and verdict (see api-keys-service.ts), so a warm call
 * finds its bytes here and serializes nothing. Entries live exactly as long as
 * their message, which lives as long as the cached key record it was built from:
 * when an invalidation evicts the record, its bytes go with it.
 */
const encodings = new WeakMap<object, Partial<Record<WireFormat, Uint8Array>>>();

/** `message` serialized with `serialization` (the method's own, so the bytes are connect's), from the cache when it was seen before. */
export function encodedMessage(message: Message, format: WireFormat, serialization: Serialization<Message>): Uint8Array {
  let byFormat = encodings.get(message);
  const known = byFormat?.[format];
  if (known !== undefined) return known;
  const data = serialization.serialize(message);
  const bytes = format === "grpc" ? envelope(data) : data;
  if (byFormat === undefined) encodings.set(message, (byFormat = {}));
  byFormat[format] = bytes;
  return bytes;
}

function envelope(data: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(5 + data.byteLength);
  out[0] = 0;
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, 5);
  return out;
}
