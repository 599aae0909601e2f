import { type DescMessage, type DescService, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BUF = fileURLToPath(new URL("../../node_modules/.bin/buf", import.meta.url));
// The fixture is outside the buf workspace (never linted or generated), so it gets its own.
const CONFIG = JSON.stringify({ version: "v2", modules: [{ path: "test/proto" }, { path: "proto" }, { path: "third_party/proto" }] });

/** The transcoding fixture contract (test/proto), compiled by buf with source info. */
export function loadBookshelf(): { Bookshelf: DescService; Nested: DescMessage } {
  const image = execFileSync(BUF, ["build", "--config", CONFIG, "--as-file-descriptor-set", "-o", "-"], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, image));
  const Bookshelf = registry.getService("transcoding.test.v1.Bookshelf");
  const Nested = registry.getMessage("transcoding.test.v1.Nested");
  if (Bookshelf === undefined || Nested === undefined) throw new Error("fixture contract incomplete");
  return { Bookshelf, Nested };
}
