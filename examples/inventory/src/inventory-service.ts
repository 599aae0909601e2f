import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { verifiedKey } from "@apikeys/client";
import { InventoryService, type Item } from "./gen/inventory/v1/inventory_pb.js";

/** The RPCs; access is already checked by the apikeys interceptor when they run. */
export function inventoryService(items: Map<string, Item>): ServiceImpl<typeof InventoryService> {
  const find = (sku: string) => {
    const item = items.get(sku);
    if (item === undefined) throw new ConnectError(`no item with sku "${sku.slice(0, 64)}"`, Code.NotFound);
    return item;
  };
  return {
    getItem(req) {
      return { item: find(req.sku) };
    },
    adjustStock(req) {
      const item = find(req.sku);
      if (item.quantity + req.delta < 0n) {
        throw new ConnectError(`only ${item.quantity} of "${item.sku}" in stock`, Code.FailedPrecondition);
      }
      item.quantity += req.delta;
      return { item };
    },
    whoAmI(_req, call) {
      const key = call.values.get(verifiedKey);
      if (key === undefined) throw new ConnectError("no API key", Code.Unauthenticated);
      return { keyId: key.id, keyName: key.name, permissions: [...key.permissions] };
    },
  };
}
