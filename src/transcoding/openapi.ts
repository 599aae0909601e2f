// Longer than 300 lines because it is one generator: the OpenAPI document of the REST routes,
// from paths and parameters down to the JSON schema of every message, enum and well-known type;
// its parts only make sense together.
import type { DescEnum, DescField, DescMessage, DescMethod, DescService } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import { readFileSync } from "node:fs";
import { methodRequirement } from "../permissions/declarations.js";
import type { HttpHandler } from "../http/handler.js";
import { type HttpRoute, httpRoutes } from "./http-rules.js";
import { isPrimitiveJsonMessage } from "./request-message.js";

/** An OpenAPI document as plain JSON. */
export type OpenApiDocument = Record<string, unknown> & { paths: Record<string, Record<string, unknown>> };
type Schema = Record<string, unknown>;

/** Where the checked-in document lives; `npm run openapi` regenerates it. */
export const OPENAPI_PATH = new URL("../../docs/openapi.json", import.meta.url);

const STATUS_SCHEMA = "google.rpc.Status";
const OPENAPI_METHODS = new Set(["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"]);

/**
 * Builds the OpenAPI 3.1 document of the REST routes of `services`. Descriptions
 * come from the proto comments when the descriptors carry source info (those of
 * `buf build` do; the ones embedded in generated code do not).
 */
export function buildOpenApi(services: readonly DescService[]): OpenApiDocument {
  const schemas: Record<string, Schema> = {
    [STATUS_SCHEMA]: {
      type: "object",
      description: "The error body of every failed call: a google.rpc.Status.",
      properties: {
        code: { type: "integer", format: "int32", description: "The gRPC status code, e.g. 5 for NOT_FOUND." },
        message: { type: "string", description: "What went wrong, for people." },
        details: {
          type: "array",
          description: "Typed error details, as proto3 JSON Any.",
          items: { type: "object", properties: { "@type": { type: "string" } }, additionalProperties: true },
        },
      },
    },
  };
  const paths: OpenApiDocument["paths"] = {};
  const refs = new SchemaBuilder(schemas);
  const operationIds = new Map<string, number>();

  for (const route of httpRoutes(services)) {
    // OpenAPI has no way to describe custom HTTP methods; they stay served but undocumented.
    if (!OPENAPI_METHODS.has(route.httpMethod)) continue;
    const { method } = route;
    const seen = operationIds.get(method.name) ?? 0;
    operationIds.set(method.name, seen + 1);
    const path = openApiPath(route);
    const operation: Record<string, unknown> = {
      operationId: seen === 0 ? method.name : `${method.name}_${seen}`,
      tags: [method.parent.name],
      ...describe(comments(method), accessNote(method)),
      parameters: parameters(route, refs),
    };
    if (route.body !== undefined) {
      operation.requestBody = {
        required: true,
        content: { "application/json": { schema: route.body === "*" ? bodySchema(route, refs) : refs.field(route.body) } },
      };
    }
    operation.responses = {
      "200": {
        description: "OK",
        content: { "application/json": { schema: route.responseBody === undefined ? refs.message(method.output) : refs.field(route.responseBody) } },
      },
      default: { description: "Error", content: { "application/json": { schema: { $ref: `#/components/schemas/${STATUS_SCHEMA}` } } } },
    };
    const requirement = methodRequirement(method);
    if (requirement.kind === "public") operation.security = [];
    (paths[path] ??= {})[route.httpMethod.toLowerCase()] = operation;
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "apikeys",
      version: "v1",
      description:
        "API keys and permissions for internal services. Generated from the proto contract (google.api.http rules); " +
        "request and response bodies are proto3 JSON.",
    },
    tags: services.map((s) => ({ name: s.name, ...describe(comments(s)) })),
    paths,
    components: {
      schemas: Object.fromEntries(Object.entries(schemas).sort(([a], [b]) => a.localeCompare(b))),
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "An API key: `Authorization: Bearer <token>`." },
        apiKey: { type: "apiKey", in: "header", name: "x-api-key", description: "An API key in the x-api-key header." },
      },
    },
    security: [{ bearer: [] }, { apiKey: [] }],
  };
}

/** Serves the checked-in document at GET /openapi.json, reduced to the operations of `services`. */
export function openApiHandler(services: readonly DescService[]): HttpHandler {
  const full = JSON.parse(readFileSync(OPENAPI_PATH, "utf8")) as OpenApiDocument;
  const body = JSON.stringify(onlyServices(full, new Set(services.map((s) => s.name))));
  return (req, res) => {
    if ((req.url ?? "/").split("?")[0] !== "/openapi.json" || (req.method !== "GET" && req.method !== "HEAD")) return false;
    res.writeHead(200, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
    if (req.method === "HEAD") res.end();
    else res.end(body);
    return true;
  };
}

/** The document with only the operations (and tags) of the named services. */
export function onlyServices(document: OpenApiDocument, names: ReadonlySet<string>): OpenApiDocument {
  const paths: OpenApiDocument["paths"] = {};
  for (const [path, operations] of Object.entries(document.paths)) {
    const kept = Object.entries(operations).filter(([, op]) => ((op as { tags?: string[] }).tags ?? []).some((t) => names.has(t)));
    if (kept.length > 0) paths[path] = Object.fromEntries(kept);
  }
  const tags = ((document.tags ?? []) as Array<{ name: string }>).filter((t) => names.has(t.name));
  return { ...document, tags, paths };
}

/** `{id}` stays, `{name=a/*}` becomes `{name}`, the verb is kept literally. */
function openApiPath(route: HttpRoute): string {
  const t = route.template;
  const parts: string[] = [];
  for (let i = 0; i < t.segments.length; i++) {
    const variable = t.variables.find((v) => v.start === i);
    if (variable !== undefined) {
      parts.push(`{${variable.fieldPath.join(".")}}`);
      i = (variable.end ?? t.segments.length) - 1;
      continue;
    }
    const s = t.segments[i]!;
    parts.push(s.kind === "literal" ? s.value : s.kind === "wildcard" ? "*" : "**");
  }
  return `/${parts.join("/")}${t.verb === undefined ? "" : `:${t.verb}`}`;
}

function parameters(route: HttpRoute, refs: SchemaBuilder): Schema[] {
  const bound = new Set(route.template.variables.map((v) => v.fieldPath.join(".")));
  const out: Schema[] = route.template.variables.map((v) => {
    const field = fieldAt(route.method.input, v.fieldPath);
    return { name: v.fieldPath.join("."), in: "path", required: true, schema: refs.field(field), ...describe(comments(field)) };
  });
  if (route.body === "*") return out;
  if (route.body !== undefined) bound.add(route.body.name);
  const walk = (message: DescMessage, prefix: string[], jsonPrefix: string[], depth: number) => {
    for (const field of message.fields) {
      const protoPath = [...prefix, field.name];
      if (bound.has(protoPath.join("."))) continue;
      const jsonPath = [...jsonPrefix, field.jsonName];
      if (field.fieldKind === "message" && !isPrimitiveJsonMessage(field.message)) {
        // Nested messages are set field by field with dotted names; stop at cycles.
        if (depth < 3) walk(field.message, protoPath, jsonPath, depth + 1);
        continue;
      }
      if (field.fieldKind === "map" || (field.fieldKind === "list" && field.listKind === "message")) continue;
      out.push({ name: jsonPath.join("."), in: "query", required: false, schema: refs.field(field), ...describe(comments(field)) });
    }
  };
  walk(route.method.input, [], [], 0);
  return out;
}

/** The body schema of a `body: "*"` route: the input message minus the fields bound by the path. */
function bodySchema(route: HttpRoute, refs: SchemaBuilder): Schema {
  const bound = new Set(route.template.variables.filter((v) => v.fieldPath.length === 1).map((v) => v.fieldPath[0]));
  if (bound.size === 0) return refs.message(route.method.input);
  const input = route.method.input;
  return {
    type: "object",
    ...describe(comments(input)),
    properties: Object.fromEntries(input.fields.filter((f) => !bound.has(f.name)).map((f) => [f.jsonName, refs.describedField(f)])),
    additionalProperties: false,
  };
}

function fieldAt(message: DescMessage, path: string[]): DescField {
  let current = message;
  let field: DescField | undefined;
  for (const name of path) {
    field = current.fields.find((f) => f.name === name)!;
    if (field.fieldKind === "message") current = field.message;
  }
  return field!;
}

/** Collects component schemas for messages and enums as they are referenced. */
class SchemaBuilder {
  constructor(private readonly schemas: Record<string, Schema>) {}

  message(message: DescMessage): Schema {
    const wkt = WELL_KNOWN[message.typeName];
    if (wkt !== undefined) return wkt;
    if (!(message.typeName in this.schemas)) {
      this.schemas[message.typeName] = {};
      this.schemas[message.typeName] = {
        type: "object",
        ...describe(comments(message)),
        properties: Object.fromEntries(message.fields.map((f) => [f.jsonName, this.describedField(f)])),
        additionalProperties: false,
      };
    }
    return { $ref: `#/components/schemas/${message.typeName}` };
  }

  enumeration(e: DescEnum): Schema {
    if (!(e.typeName in this.schemas)) {
      const values = e.values.map((v) => `- ${v.name}${comments(v) ? `: ${comments(v)}` : ""}`).join("\n");
      this.schemas[e.typeName] = {
        type: "string",
        enum: e.values.map((v) => v.name),
        description: [comments(e), values].filter((s) => s !== "").join("\n\n"),
      };
    }
    return { $ref: `#/components/schemas/${e.typeName}` };
  }

  describedField(field: DescField): Schema {
    return { ...this.field(field), ...describe(comments(field)) };
  }

  field(field: DescField): Schema {
    switch (field.fieldKind) {
      case "scalar":
        return scalarSchema(field.scalar);
      case "enum":
        return this.enumeration(field.enum);
      case "message":
        return this.message(field.message);
      case "list":
        return {
          type: "array",
          items: field.listKind === "scalar" ? scalarSchema(field.scalar) : field.listKind === "enum" ? this.enumeration(field.enum) : this.message(field.message),
        };
      case "map":
        return {
          type: "object",
          additionalProperties:
            field.mapKind === "scalar" ? scalarSchema(field.scalar) : field.mapKind === "enum" ? this.enumeration(field.enum) : this.message(field.message),
        };
    }
  }
}

const INT64 = { type: "string", format: "int64", pattern: "^-?[0-9]+$" };
const UINT64 = { type: "string", format: "uint64", pattern: "^[0-9]+$" };

function scalarSchema(scalar: ScalarType): Schema {
  switch (scalar) {
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.BYTES:
      return { type: "string", format: "byte", contentEncoding: "base64" };
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", format: "uint32", minimum: 0 };
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return { ...INT64 };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return { ...UINT64 };
  }
}

/** JSON shapes of the well-known types, from the proto3 JSON mapping. */
const WELL_KNOWN: Record<string, Schema> = {
  "google.protobuf.Timestamp": { type: "string", format: "date-time", description: "RFC 3339 timestamp, e.g. 2024-01-31T12:00:00Z." },
  "google.protobuf.Duration": { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$", description: 'Seconds with an "s" suffix, e.g. "3600s".' },
  "google.protobuf.FieldMask": { type: "string", description: 'Comma-separated field paths, e.g. "name,policyId".' },
  "google.protobuf.Struct": { type: "object", additionalProperties: true },
  "google.protobuf.Value": {},
  "google.protobuf.ListValue": { type: "array", items: {} },
  "google.protobuf.Empty": { type: "object", additionalProperties: false },
  "google.protobuf.Any": { type: "object", properties: { "@type": { type: "string" } }, required: ["@type"], additionalProperties: true },
  "google.protobuf.DoubleValue": { type: "number", format: "double" },
  "google.protobuf.FloatValue": { type: "number", format: "float" },
  "google.protobuf.Int64Value": INT64,
  "google.protobuf.UInt64Value": UINT64,
  "google.protobuf.Int32Value": { type: "integer", format: "int32" },
  "google.protobuf.UInt32Value": { type: "integer", format: "uint32", minimum: 0 },
  "google.protobuf.BoolValue": { type: "boolean" },
  "google.protobuf.StringValue": { type: "string" },
  "google.protobuf.BytesValue": { type: "string", format: "byte" },
};

function accessNote(method: DescMethod): string {
  const requirement = methodRequirement(method);
  switch (requirement.kind) {
    case "public":
      return "Needs no API key.";
    case "any_key":
      return "Needs any valid API key.";
    case "permissions": {
      const parts = [];
      if (requirement.allOf.length > 0) parts.push(`every one of ${requirement.allOf.join(", ")}`);
      if (requirement.anyOf.length > 0) parts.push(`at least one of ${requirement.anyOf.join(", ")}`);
      return `Needs an API key granting ${parts.join(" and ")}.`;
    }
    case "undeclared":
      return "Callable by nobody: the method declares no access rule.";
  }
}

function describe(...texts: string[]): { description?: string } {
  const text = texts.filter((t) => t !== "").join("\n\n");
  return text === "" ? {} : { description: text };
}

type Commented = DescService | DescMethod | DescMessage | DescField | DescEnum | DescEnum["values"][number];

/** The leading comment of a descriptor from its file's source info; "" when there is none. */
function comments(desc: Commented): string {
  const file = desc.kind === "service" || desc.kind === "message" || desc.kind === "enum" ? desc.file : desc.parent.file;
  const path = sourcePath(desc);
  const location = file.proto.sourceCodeInfo?.location.find((l) => l.path.length === path.length && l.path.every((n, i) => n === path[i]));
  const text = location?.leadingComments ?? "";
  return text
    .split("\n")
    .map((line) => line.replace(/^ /, "").trimEnd())
    .join("\n")
    .trim();
}

/** The SourceCodeInfo path of a descriptor (field numbers of FileDescriptorProto and friends). */
function sourcePath(desc: Commented): number[] {
  switch (desc.kind) {
    case "service":
      return [6, desc.file.proto.service.indexOf(desc.proto)];
    case "rpc":
      return [...sourcePath(desc.parent), 2, desc.parent.proto.method.indexOf(desc.proto)];
    case "message":
      return desc.parent === undefined
        ? [4, desc.file.proto.messageType.indexOf(desc.proto)]
        : [...sourcePath(desc.parent), 3, desc.parent.proto.nestedType.indexOf(desc.proto)];
    case "field":
      return [...sourcePath(desc.parent), 2, desc.parent.proto.field.indexOf(desc.proto)];
    case "enum":
      return desc.parent === undefined
        ? [5, desc.file.proto.enumType.indexOf(desc.proto)]
        : [...sourcePath(desc.parent), 4, desc.parent.proto.enumType.indexOf(desc.proto)];
    case "enum_value":
      return [...sourcePath(desc.parent), 2, desc.parent.proto.value.indexOf(desc.proto)];
  }
}
