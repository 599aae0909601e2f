import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import http from "node:http";
import { apiKeyAuth, clientAddressContext, createApiKeysClients, registerPermissions } from "@apikeys/client";
import { InventoryService, ItemSchema, type Item } from "./gen/inventory/v1/inventory_pb.js";
import { inventoryService } from "./inventory-service.js";

const apikeysUrl = process.env.APIKEYS_URL ?? "http://127.0.0.1:5000";
const token = process.env.APIKEYS_TOKEN;
if (token === undefined || token === "") {
  process.stderr.write("inventory: set APIKEYS_TOKEN to a key holding apikeys:verify and apikeys:permissions.register\n");
  process.exit(2);
}
const port = Number(process.env.PORT ?? 5100);

const clients = createApiKeysClients({ baseUrl: apikeysUrl, token });
// Fails fast on inconsistent options, then declares inventory:* to apikeys.
await registerPermissions([InventoryService], clients.apiKeys);

const auth = apiKeyAuth({
  client: clients.apiKeys,
  onEvent(event) {
    // Logged so operators (and the end-to-end test) can see the cache follow apikeys.
    if (event.type === "invalidation") console.log(`apikeys: evicted ${event.kind} ${event.id}`);
    else if (event.type === "resync") console.log("apikeys: invalidation stream resynced");
    else console.log(`apikeys: invalidation stream lost (${Code[event.error.code]}: ${event.error.rawMessage}), reconnecting`);
  },
});

const items = new Map<string, Item>(
  [
    { sku: "bolt-m8", name: "Hex bolt M8", quantity: 1200n },
    { sku: "nut-m8", name: "Hex nut M8", quantity: 800n },
  ].map((init) => [init.sku, create(ItemSchema, init)]),
);

const server = http.createServer(
  connectNodeAdapter({
    routes: (router) => router.service(InventoryService, inventoryService(items)),
    interceptors: [auth],
    contextValues: clientAddressContext,
  }),
);
server.listen(port, process.env.HOST ?? "127.0.0.1", () => {
  const address = server.address();
  console.log(`inventory listening on port ${typeof address === "object" && address ? address.port : port}`);
});

const shutdown = () => {
  server.close();
  server.closeAllConnections();
  void auth.close().then(() => process.exit(0));
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
