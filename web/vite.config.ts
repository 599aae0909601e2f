import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [react()],
  build: {
    // Outside web/, so Vite must be told that emptying it is intended.
    outDir: "../dist/web",
    emptyOutDir: true,
    // One chunk on purpose (an admin page, loaded once); protobuf descriptors make it larger than Vite's default hint.
    chunkSizeWarningLimit: 1024,
  },
  // `npm run dev:web` serves the page with hot reload and sends RPCs to a running server.
  server: { proxy: { "/apikeys.v1.": "http://127.0.0.1:5000" } },
});
