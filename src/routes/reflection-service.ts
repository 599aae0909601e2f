import type { DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** Index of what reflection can describe: the served services' files and everything they import. */
interface ReflectionIndex {
  services: string[];
  files: Map<string, DescFile>;
  symbols: Map<string, DescFile>;
  extensions: Map<string, Map<number, DescFile>>;
}

/** The reflection services (v1 and v1alpha) describing `served`, for `buf curl` and `grpcurl`. */
export function reflectionServices(served: readonly DescService[]): {
  v1: ServiceImpl<typeof v1.ServerReflection>;
  v1alpha: ServiceImpl<typeof v1alpha.ServerReflection>;
} {
  const all = [...served, v1.ServerReflection, v1alpha.ServerReflection];
  const index = buildIndex(all);
  return {
    v1: {
      async *serverReflectionInfo(requests) {
        const sent = new Set<string>();
        for await (const req of requests) yield answer(index, req, sent);
      },
    },
    // v1alpha is wire-identical to v1: answer through v1 and re-read the bytes.
    v1alpha: {
      async *serverReflectionInfo(requests) {
        const sent = new Set<string>();
        for await (const req of requests) {
          const asV1 = fromBinary(v1.ServerReflectionRequestSchema, toBinary(v1alpha.ServerReflectionRequestSchema, req));
          const res = answer(index, asV1, sent);
          yield fromBinary(v1alpha.ServerReflectionResponseSchema, toBinary(v1.ServerReflectionResponseSchema, res));
        }
      },
    },
  };
}

function buildIndex(services: readonly DescService[]): ReflectionIndex {
  const index: ReflectionIndex = { services: services.map((s) => s.typeName), files: new Map(), symbols: new Map(), extensions: new Map() };
  const visit = (file: DescFile) => {
    if (index.files.has(file.name)) return;
    index.files.set(file.name, file);
    file.dependencies.forEach(visit);
    const addMessage = (m: DescMessage) => {
      index.symbols.set(m.typeName, file);
      for (const f of m.fields) index.symbols.set(`${m.typeName}.${f.name}`, file);
      m.nestedMessages.forEach(addMessage);
      for (const e of m.nestedEnums) index.symbols.set(e.typeName, file);
      for (const x of m.nestedExtensions) addExtension(x.extendee.typeName, x.number, x.typeName);
    };
    const addExtension = (extendee: string, number: number, typeName: string) => {
      index.symbols.set(typeName, file);
      const byNumber = index.extensions.get(extendee) ?? new Map<number, DescFile>();
      byNumber.set(number, file);
      index.extensions.set(extendee, byNumber);
    };
    file.messages.forEach(addMessage);
    for (const e of file.enums) index.symbols.set(e.typeName, file);
    for (const x of file.extensions) addExtension(x.extendee.typeName, x.number, x.typeName);
    for (const s of file.services) {
      index.symbols.set(s.typeName, file);
      for (const m of s.methods) index.symbols.set(`${s.typeName}.${m.name}`, file);
    }
  };
  for (const s of services) visit(s.file);
  return index;
}

/** Answers one request; file answers carry the file and whatever it imports not yet sent on this stream. */
function answer(index: ReflectionIndex, req: v1.ServerReflectionRequest, sent: Set<string>): v1.ServerReflectionResponse {
  return create(v1.ServerReflectionResponseSchema, respond(index, req, sent));
}

function respond(index: ReflectionIndex, req: v1.ServerReflectionRequest, sent: Set<string>) {
  const base = { validHost: req.host, originalRequest: req };
  const notFound = (what: string) => ({
    ...base,
    messageResponse: { case: "errorResponse" as const, value: { errorCode: Code.NotFound, errorMessage: `${what} not found` } },
  });
  const files = (file: DescFile | undefined, what: string) =>
    file === undefined
      ? notFound(what)
      : { ...base, messageResponse: { case: "fileDescriptorResponse" as const, value: { fileDescriptorProto: withImports(file, sent) } } };

  const request = req.messageRequest;
  switch (request.case) {
    case "listServices":
      return {
        ...base,
        messageResponse: { case: "listServicesResponse" as const, value: { service: index.services.map((name) => ({ name })) } },
      };
    case "fileByFilename":
      return files(index.files.get(request.value), `file "${request.value}"`);
    case "fileContainingSymbol":
      return files(index.symbols.get(request.value), `symbol "${request.value}"`);
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = request.value;
      return files(index.extensions.get(containingType)?.get(extensionNumber), `extension ${extensionNumber} of "${containingType}"`);
    }
    case "allExtensionNumbersOfType": {
      if (!index.symbols.has(request.value)) return notFound(`type "${request.value}"`);
      return {
        ...base,
        messageResponse: {
          case: "allExtensionNumbersResponse" as const,
          value: { baseTypeName: request.value, extensionNumber: [...(index.extensions.get(request.value)?.keys() ?? [])].sort((a, b) => a - b) },
        },
      };
    }
    default:
      return {
        ...base,
        messageResponse: { case: "errorResponse" as const, value: { errorCode: Code.InvalidArgument, errorMessage: "empty reflection request" } },
      };
  }
}

/** Serialized descriptors of `file` and its transitive imports, skipping those already sent. */
function withImports(file: DescFile, sent: Set<string>): Uint8Array[] {
  const out: Uint8Array[] = [];
  const visit = (f: DescFile, requested: boolean) => {
    if (sent.has(f.name) && !requested) return;
    sent.add(f.name);
    out.push(toBinary(FileDescriptorProtoSchema, f.proto));
    for (const dep of f.dependencies) visit(dep, false);
  };
  visit(file, true);
  return out;
}
