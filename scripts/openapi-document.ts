import { fromBinary, createFileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { SERVICES } from "../src/server.js";
import { type OpenApiDocument, buildOpenApi } from "../src/transcoding/openapi.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/**
 * The OpenAPI document of every service the server implements, built from
 * `buf build` descriptors: the generated code drops proto comments, these keep them.
 */
export function openApiFromProtoSources(): OpenApiDocument {
  const image = execFileSync(fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url)), ["build", "--as-file-descriptor-set", "-o", "-"], {
    cwd: ROOT,
    maxBuffer: 64 * 1024 * 1024,
  });
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, image));
  const services = SERVICES.map((s) => {
    const described = registry.getService(s.typeName);
    if (described === undefined) throw new Error(`buf build has no service ${s.typeName}`);
    return described;
  });
  return buildOpenApi(services);
}

/** The document as it is checked in: two-space JSON with a final newline. */
export function formatOpenApi(document: OpenApiDocument): string {
  return `${JSON.stringify(document, null, 2)}\n`;
}
